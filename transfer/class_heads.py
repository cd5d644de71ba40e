"""Class-aware heads: a new head keeps the checkpoint's rows of the classes both share.

`--keep-classes` matches each new class (an image folder's class folder name) with the
source's class names: the registry record's `class_names()` or a `--source-labels` file,
one row per line, each line a comma list of synonyms (ImageNet's WordNet synonyms). A
name matches a row when it equals one of the row's synonyms, case and "_" against " "
aside. A `--class-map` JSON file ({new class: [source class names]}) names the rows of a
class whose name differs; the class then starts from the mean of those rows. A class
found nowhere, or whose name two rows share, starts fresh. A network's background logits
(its registry `label_offset`) never match.

The head's variables are the plan's fresh variables whose last axis holds one entry per
new class and whose checkpoint namesake holds one per source row. Their plan rows become
the row kind "classes"; `ClassRows` says which checkpoint rows each output column takes.
The restore writes those columns (a numpy gather from the checkpoint, then an assign)
after the partial Saver, and `worst_difference` proves them bit-equal to the gather, then
again after training when the head is frozen.
"""

import dataclasses

import numpy as np

from runtime import userfiles
from runtime.errors import UserError
from runtime.paths import shown
from transfer import moving_average as shadows
from transfer.plan import PlanRow
from transfer.selection import capped
from transfer.source import worst_difference

ACTION = "classes"  # the plan row kind of a head variable some of whose columns come from the checkpoint
_MAP_KEYS_HINT = 'a class map is a JSON object {"new class": ["source class", ...]}'


@dataclasses.dataclass(frozen=True)
class ClassSources:
    """What the new classes are matched against, parsed at the flag boundary.

    Attributes:
      rows: per checkpoint head row, its synonyms in match form (() for a background logit).
      class_map: ((new class, (source class names, ...)), ...) from --class-map.
      where: where the names came from, for messages.
    """

    rows: tuple
    class_map: tuple = ()
    where: str = "the source's class names"


@dataclasses.dataclass(frozen=True)
class ClassRows:
    """Where each output column of one head variable comes from.

    Attributes:
      name: the graph variable.
      source: its checkpoint namesake.
      columns: per new class, the checkpoint rows it takes (averaged when several), () for fresh.
    """

    name: str
    source: str
    columns: tuple


def match_form(name):
    """A class name as names are compared: case-folded, "_" read as " ", spaces collapsed."""
    return " ".join(name.replace("_", " ").casefold().split())


def synonyms(line):
    """The names one class line answers to: its comma-separated synonyms, in match form."""
    return tuple(form for form in (match_form(part) for part in line.split(",")) if form)


def sources_of(lines, label_offset, class_map=(), where="the source's class names"):
    """ClassSources from class lines (one per row after `label_offset` background logits)."""
    return ClassSources(((),) * label_offset + tuple(synonyms(line) for line in lines), class_map, where)


def read_labels(path):
    """The lines of a --source-labels file: one class per line, "#" lines and blank lines skipped.

    Raises:
      UserError: for a file that cannot be read (runtime.userfiles.read_text) or holds no class.
    """
    lines = [line.strip() for line in userfiles.read_text(path, "--source-labels").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise UserError(f"--source-labels {shown(path)} names no class")
    return lines


def parse_class_map(text, where):
    """A --class-map document, through its allow-list: an object of non-empty lists of non-empty strings.

    Returns:
      ((new class in match form, (source names in match form, ...)), ...), in file order.

    Raises:
      UserError: one line, for anything else.
    """
    document = userfiles.parse_json(text, "--class-map", where)
    if not isinstance(document, dict) or not document:
        raise UserError(f"--class-map {where}: {_MAP_KEYS_HINT}")
    pairs, seen = [], set()
    for key, names in document.items():
        if not (isinstance(names, list) and names and all(isinstance(n, str) and match_form(n) for n in names)):
            raise UserError(f"--class-map {where}: {key!r} must map to a non-empty list of class names")
        if not match_form(key) or match_form(key) in seen:
            raise UserError(f"--class-map {where}: {key!r} is blank or named twice")
        seen.add(match_form(key))
        pairs.append((match_form(key), tuple(match_form(name) for name in names)))
    return tuple(pairs)


def load_class_map(path):
    """parse_class_map of a file's text (runtime.userfiles.read_text); UserError when it cannot be read."""
    return parse_class_map(userfiles.read_text(path, "--class-map"), shown(path))


def match_classes(class_names, sources):
    """The one matching rule: per new class, (checkpoint rows, how it was found).

    Returns:
      A tuple, one (rows, why) per class name: rows () and why "fresh ..." when it starts fresh.

    Raises:
      UserError: a --class-map entry that names no new class, or a source name no row holds.
    """
    rows_of = {}
    for row, names in enumerate(sources.rows):
        for name in names:
            rows_of.setdefault(name, []).append(row)
    mapped = dict(sources.class_map)
    forms = [match_form(name) for name in class_names]
    twice = [name for name, form in zip(class_names, forms) if forms.count(form) > 1]
    if twice:
        raise UserError(
            f"--keep-classes: the classes {', '.join(map(repr, twice[:2]))} are one name to the matching (case, "
            "'_' and spaces aside): rename one"
        )
    for key in mapped:
        if key not in forms:
            raise UserError(f"--class-map names {key!r}, which is not one of the new classes ({capped(forms)})")
    matches = []
    for form in forms:
        if form in mapped:
            matches.append(_mapped(form, mapped[form], rows_of, sources.where))
        elif len(rows_of.get(form, ())) == 1:
            matches.append(((rows_of[form][0],), "same name"))
        elif form in rows_of:
            listed = ", ".join(str(row) for row in rows_of[form])
            matches.append(((), f"fresh: rows {listed} share the name; choose with --class-map"))
        else:
            matches.append(((), "fresh: not a source class"))
    return tuple(matches)


def _mapped(form, names, rows_of, where):
    rows = []
    for name in names:
        found = rows_of.get(name, ())
        if len(found) != 1:
            why = "names no row" if not found else f"is the name of rows {', '.join(map(str, found))}"
            raise UserError(f"--class-map {form!r}: {name!r} {why} of {where}")
        if found[0] not in rows:
            rows.append(found[0])
    return tuple(rows), "mean of " + str(len(rows)) + " rows (--class-map)" if len(rows) > 1 else "--class-map"


def keep_classes(plan, class_names, selection, checkpoint_variables):
    """The plan with its head variables made rows of kind "classes", their ClassRows and its class section.

    Args:
      selection: the RestoreSelection: its `classes` (ClassSources) are matched, and with its
        `moving_average` a head whose shadow the checkpoint holds gives the shadow's rows.

    Returns:
      The RestorePlan, its `class_rows` and `class_notes` set.

    Raises:
      UserError: when no fresh variable is a head of these classes over the source's rows.
    """
    sources = selection.classes
    matches = match_classes(class_names, sources)
    by_name = {info.name: info for info in checkpoint_variables}
    held = {info.name: info.shape for info in checkpoint_variables}
    heads, rows = [], []
    for row in plan.rows:
        theirs = by_name.get(row.name)
        if row.action != "restored" and theirs is not None and _is_head(row.shape, theirs.shape, class_names, sources):
            source, kind = shadows.source_of(theirs.name, held, selection.moving_average)
            heads.append(ClassRows(row.name, source, tuple(rows for rows, _ in matches)))
            kept = sum(bool(rows) for rows, _ in matches)
            reason = f"{kept} of {len(class_names)} classes from the checkpoint's rows"
            reason += ", shadow" if kind == shadows.AVERAGED else ""
            row = PlanRow(row.name, row.shape, source, ACTION, reason, row.lr_mult, row.updated)
        rows.append(row)
    if not heads:
        raise UserError(_no_head(plan, by_name, class_names, sources))
    notes = tuple(section(class_names, matches))
    used = {head.name for head in heads} | {head.source for head in heads}  # its namesake, or that one's shadow
    unused = tuple(info for info in plan.unused if info.name not in used)
    return dataclasses.replace(plan, rows=tuple(rows), unused=unused, class_rows=tuple(heads), class_notes=notes)


def _no_head(plan, by_name, class_names, sources):
    """Why keep_classes found no head: the source names that miss the head's width, or what the plan restores."""
    count = len(class_names)
    for row in plan.rows:
        theirs = by_name.get(row.name)
        if row.action != "restored" and theirs is not None and _is_head(row.shape, theirs.shape, class_names, None):
            return (
                f"--keep-classes: {sources.where} name {len(sources.rows)} rows, background logits included, but "
                f"the checkpoint's {theirs.name} has {theirs.shape[-1]}: one class line per row of the head"
            )
    restored = [row.name for row in plan.rows if row.action == "restored" and row.shape and row.shape[-1] == count]
    return (
        f"--keep-classes: no fresh graph variable has one entry per new class ({count}) and a checkpoint namesake "
        f"of one per row of {sources.where} ({len(sources.rows)})"
        + (f"; {restored[0]} is restored: restore less than the head (e.g. --restore backbone)" if restored else "")
    )


def _is_head(graph_shape, checkpoint_shape, class_names, sources):
    """Whether a variable is a head of the new classes over the source's rows (over any rows: sources None)."""
    return (
        len(graph_shape) == len(checkpoint_shape)
        and tuple(graph_shape[:-1]) == tuple(checkpoint_shape[:-1])
        and graph_shape[-1] == len(class_names)
        and (sources is None or checkpoint_shape[-1] == len(sources.rows))
    )


def section(class_names, matches):
    """The plan's class section: one line per new class, its source row(s) or "fresh"."""
    lines = ["class rows (--keep-classes): class -> checkpoint row(s) of the head"]
    wheres = [", ".join(str(row) for row in rows) if rows else "fresh" for rows, _ in matches]
    width, where_width = max(len(name) for name in class_names), max(len(where) for where in wheres)
    for name, where, (_, why) in zip(class_names, wheres, matches):
        lines.append(f"  {name.ljust(width)}  {where.ljust(where_width)}  ({why})")
    kept = sum(bool(rows) for rows, _ in matches)
    lines.append(f"  {kept} of {len(class_names)} classes start from the checkpoint's rows, the others fresh")
    return lines


def gather(source_value, columns):
    """{column: value} for the kept columns: the checkpoint's row, or the float64 mean of a group cast back."""
    kept = {}
    for column, rows in enumerate(columns):
        if len(rows) == 1:
            kept[column] = source_value[..., rows[0]]
        elif rows:
            kept[column] = np.mean(source_value[..., list(rows)], axis=-1, dtype=np.float64).astype(source_value.dtype)
    return kept


def write(sess, heads, variables, source_values):
    """Assigns the kept columns of each head variable (after its fresh initialisation), then proves them.

    Args:
      source_values: {checkpoint name: numpy value}; must hold each ClassRows.source.
    """
    by_name = {var.op.name: var for var in variables}
    for head in heads:
        value = sess.run(by_name[head.name])
        for column, kept in gather(source_values[head.source], head.columns).items():
            value[..., column] = kept
        by_name[head.name].load(value, sess)
    worst = check(sess, heads, variables, source_values)
    if worst != 0.0:
        raise UserError(f"class rows check failed: the kept columns differ from the checkpoint by up to {worst:g}")
    columns = sum(sum(bool(rows) for rows in head.columns) for head in heads)
    print(f"class rows: {columns} columns of {len(heads)} head variables written; each equals the checkpoint's")


def reads(plan):
    """The checkpoint names a restore reads: the plan's sources and its heads' (the run's and the library's)."""
    return plan.sources() + [head.source for head in plan.class_rows]


def check_frozen(sess, plan, variables, source_values):
    """Proves a frozen head's kept class columns still equal the checkpoint's rows (after training).

    Raises:
      UserError: when they moved, saying by how much.
    """
    held = {var.op.name for var in variables}
    frozen_heads = [head for head in plan.class_rows if head.name in plan.frozen_class_heads and head.name in held]
    worst = check(sess, frozen_heads, variables, source_values)
    if frozen_heads:
        columns = sum(sum(bool(rows) for rows in head.columns) for head in frozen_heads)
        print(f"frozen check of the head's kept class columns: {columns} columns, max |diff| = {worst:g}")
    if worst != 0.0:
        raise UserError(f"frozen check failed: the frozen head's kept class columns moved by up to {worst:g}")


def check(sess, heads, variables, source_values):
    """The largest |difference| between the heads' kept columns and the checkpoint's (gathered) rows."""
    by_name = {var.op.name: var for var in variables}
    values = sess.run([by_name[head.name] for head in heads]) if heads else []
    pairs = []
    for head, value in zip(heads, values):
        pairs += [
            (value[..., column], kept) for column, kept in gather(source_values[head.source], head.columns).items()
        ]
    return worst_difference(pairs)
