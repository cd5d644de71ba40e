"""The per-tensor report every conversion prints (transfer.convert, transfer.keras_bridge)."""


def report_lines(rows, dropped):
    """The per-tensor report, one line per source tensor."""
    lines = [f"{len(rows)} tensors converted (source -> target, shape, dtype, transform):"]
    lines += [f"  {r['source']} -> {r['target']}  {r['shape']}  {r['dtype']}  {r['transform']}" for r in rows]
    if dropped:
        lines.append(f"{len(dropped)} tensors dropped:")
        lines += [f"  {d['source']}  {d['shape']}  {d['dtype']}  dropped: {d['reason']}" for d in dropped]
    return lines
