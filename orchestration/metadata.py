"""How assets show their figures in the Dagster UI: counts as ints, figures rounded, pairs and rows as tables."""

import dagster as dg


def figure(value: float | None, digits: int = 2) -> dg.MetadataValue:
    """A number rounded for the UI (it shows floats to 16 digits); null stays null."""
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.float(round(float(value), digits))


def pairs_table(values: dict, key: tuple[str, str], value: tuple[str, str]) -> dg.MetadataValue:
    """A dict as a two-column table; `key` and `value` are (column name, Dagster column type)."""
    schema = dg.TableSchema([dg.TableColumn(*key), dg.TableColumn(*value)])
    return dg.MetadataValue.table([dg.TableRecord({key[0]: k, value[0]: v}) for k, v in values.items()], schema)


def rows_table(rows: list[dict], columns: list[tuple[str, str]], digits: int = 2) -> dg.MetadataValue:
    """Records as a table of these (name, type) columns, floats rounded."""
    records = [dg.TableRecord({name: round(row[name], digits) if kind == "float" and row.get(name) is not None
                               else row.get(name) for name, kind in columns}) for row in rows]
    return dg.MetadataValue.table(records, dg.TableSchema([dg.TableColumn(name, kind) for name, kind in columns]))
