"""The per-tensor report every conversion prints (transfer.convert, transfer.keras_bridge)."""

from runtime.paths import shown


def report_lines(rows, dropped):
    """The per-tensor report, one line per source tensor (a name's unprintable characters escaped)."""
    lines = [f"{len(rows)} tensors converted (source -> target, shape, dtype, transform):"]
    for row in rows:
        shape, target_shape = row["shape"], row.get("target_shape", row["shape"])
        shape = str(shape) if shape == target_shape else f"{shape} -> {target_shape}"
        names = f"{shown(row['source'])} -> {shown(row['target'])}"
        lines.append(f"  {names}  {shape}  {row['dtype']}  {row['transform']}")
    if dropped:
        lines.append(f"{len(dropped)} tensors dropped:")
        lines += [f"  {shown(d['source'])}  {d['shape']}  {d['dtype']}  dropped: {d['reason']}" for d in dropped]
    return lines
