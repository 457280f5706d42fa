"""Layout TOML parsing and validation against a database."""

import textwrap

import cantools
import pytest

from packbms.errors import LayoutError
from packbms.layout import load_layout, parse_layout

DBC = textwrap.dedent('''\
    VERSION ""
    BS_:
    BU_: BMS
    BO_ 256 PackStatus: 8 BMS
     SG_ PackCurrent : 7|16@0- (0.1,0) [-3276.8|3276.7] "A" Vector__XXX
     SG_ PackVoltage : 23|16@0+ (0.01,0) [0|655.35] "V" Vector__XXX
    BO_ 257 CellVoltages: 8 BMS
     SG_ CellGroup M : 0|8@1+ (1,0) [0|255] "" Vector__XXX
     SG_ V1 m0 : 8|16@1+ (0.001,0) [0|65.535] "V" Vector__XXX
     SG_ V2 m0 : 24|16@1+ (0.001,0) [0|65.535] "V" Vector__XXX
     SG_ V1 m1 : 8|16@1+ (0.001,0) [0|65.535] "V" Vector__XXX
     SG_ V2 m1 : 24|16@1+ (0.001,0) [0|65.535] "V" Vector__XXX
    BO_ 258 Cells: 8 BMS
     SG_ Cell1_Voltage : 0|16@1+ (0.001,0) [0|65.535] "V" Vector__XXX
     SG_ Cell2_Voltage : 16|16@1+ (0.001,0) [0|65.535] "V" Vector__XXX
     SG_ Cell3_Voltage : 32|16@1+ (0.001,0) [0|65.535] "V" Vector__XXX
     SG_ Cell4_Voltage : 48|16@1+ (0.001,0) [0|65.535] "V" Vector__XXX
    ''')

BASE = '''
[pack]
cells_in_series = 4
capacity_ah = 60
chemistry = "nmc"
[current]
signal = "PackCurrent"
positive = "charge"
'''


@pytest.fixture(scope="module")
def db():
    return cantools.database.load_string(DBC, "dbc", strict=False)


def test_pattern_layout_validates(db):
    lay = parse_layout(BASE + '[cell_voltage]\npattern = "Cell{index}_Voltage"\n').validate(db)
    assert lay.cell_voltage.signal_names() == [f"Cell{i}_Voltage" for i in range(1, 5)]
    assert lay.current_sign == -1.0
    assert lay.capacity_ah == 60.0 and isinstance(lay.capacity_ah, float)
    assert lay.required_messages(db) == ["Cells", "PackStatus"]


def test_mux_layout_validates(db):
    lay = parse_layout(BASE + '[cell_voltage]\nmessage = "CellVoltages"\nmux = "CellGroup"\n'
                       'signals = ["V1", "V2"]\n').validate(db)
    assert lay.cell_voltage.is_mux and lay.cell_voltage.count == 4
    assert lay.mux_cell_count(lay.cell_voltage, db) == 4


def test_missing_signal_names_closest(db, tmp_path):
    p = tmp_path / "pack.toml"
    p.write_text(BASE + '[cell_voltage]\npattern = "Cell{index}_Volt"\n')
    with pytest.raises(LayoutError) as e:
        load_layout(p, db)
    msg = str(e.value)
    assert "Cell1_Volt" in msg and "Cell1_Voltage" in msg and str(p) in msg
    assert "[cell_voltage]" in msg


def test_missing_current_signal(db):
    lay = parse_layout(BASE.replace("PackCurrent", "PackCurrnt")
                       + '[cell_voltage]\npattern = "Cell{index}_Voltage"\n')
    with pytest.raises(LayoutError, match="PackCurrent"):
        lay.validate(db)


@pytest.mark.parametrize("body, match", [
    ('[cell_voltage]\nmessage = "CellVoltage"\nmux = "CellGroup"\nsignals = ["V1"]\n',
     "CellVoltages"),
    ('[cell_voltage]\nmessage = "CellVoltages"\nmux = "V1"\nsignals = ["V1"]\n',
     "not a multiplexer"),
    ('[cell_voltage]\nmessage = "CellVoltages"\nmux = "CellGroup"\nsignals = ["V3"]\n',
     "no signal 'V3'"),
])
def test_bad_mux_group(db, body, match):
    with pytest.raises(LayoutError, match=match):
        parse_layout(BASE + body).validate(db)


@pytest.mark.parametrize("text, match", [
    ("[pack\n", "invalid TOML"),
    ("[current]\nsignal='x'\n", r"missing section \[pack\]"),
    (BASE.replace("cells_in_series = 4", "cells_in_series = 'four'"), "must be int"),
    (BASE.replace("capacity_ah = 60", "capacity_ah = -1"), "capacity_ah must be > 0"),
    (BASE.replace('positive = "charge"', 'positive = "in"'), "must be one of"),
    (BASE + '[cell_voltage]\npattern = "Cell_Voltage"\n', "must contain {index}"),
    (BASE + '[cell_voltage]\npattern = "C{index}"\ncount = 3\n', "differs from cells_in_series"),
    (BASE + '[cell_voltage]\npattern = "C{index}"\n[cel_temperature]\npattern="T{index}"\n',
     "unknown section"),
    (BASE.replace('chemistry = "nmc"', 'ocv_table = "x.csv"\nchemistry = "nmc"')
     + '[cell_voltage]\npattern = "C{index}"\n', "exactly one of"),
])
def test_malformed_layouts(text, match):
    with pytest.raises(LayoutError, match=match):
        parse_layout(text)


def test_missing_file(tmp_path):
    with pytest.raises(LayoutError, match="not found"):
        load_layout(tmp_path / "nope.toml")


def test_relative_ocv_table(tmp_path):
    p = tmp_path / "sub" / "pack.toml"
    p.parent.mkdir()
    p.write_text(BASE.replace('chemistry = "nmc"', 'ocv_table = "ocv.csv"')
                 + '[cell_voltage]\npattern = "C{index}"\n')
    assert load_layout(p).ocv_table == tmp_path / "sub" / "ocv.csv"
