"""The restore plan: what happens to every graph variable, decided before anything runs.

The plan is pure data (names, shapes, dtypes), so it is built and tested without a
session, printed for the user, written to restore_plan.json and used to make the
partial Saver and the optimizer's var_list.

BatchNorm's moving statistics are graph variables the optimizer never trains. The plan
decides whether each layer's statistics stay as they are (frozen: inference mode, moving
statistics used and never updated, covered by the frozen check) or are updated by the
layer (training mode, batch statistics). A layer is in training mode when its gamma and
beta train and either they were not restored (a fresh layer has no statistics worth
keeping) or the run asks for it (`train_batch_norm`, the --train-batch-norm flag). Unlike
TF-Slim's train_image_classifier, which runs every layer's UPDATE_OPS, a frozen layer's
statistics never move.
"""

import dataclasses

from runtime.errors import UserError
from runtime.paths import shown
from transfer import channels
from transfer import moving_average as shadows
from transfer.selection import (
    capped,
    compiled,
    in_scope,
    is_pattern,
    model_variable_names,
    outer_scope_maps,
    selects,
    top_scopes,
)

MOVING_STATISTICS = ("/moving_mean", "/moving_variance")
SKIPPED_WITH = "layer skipped with"  # the reason of a variable skipped because its layer-mate mismatches


class PlanError(UserError):
    """The restore flags do not fit the graph or the checkpoint."""


@dataclasses.dataclass(frozen=True)
class VariableInfo:
    """A variable's name, shape and dtype, from the graph or from a checkpoint.

    `trainable` is False for graph variables no optimizer trains (BatchNorm's moving
    statistics); checkpoint entries leave it True.
    """

    name: str
    shape: tuple
    dtype: str
    trainable: bool = True


@dataclasses.dataclass(frozen=True)
class RestoreSelection:
    """What to restore from a checkpoint and how to train it: the request a plan answers.

    train_transfer.py and `transfer.inspect --plan` parse it from their flags
    (transfer.flags.TRANSFER_OPTIONS); the library (transfer.library) takes it as it is.

    Attributes:
      restore: graph scopes to restore, () for none, or None for everything the checkpoint holds.
        Here, in `exclude` and in `lr_mults` an item `re:REGEX` is a pattern that must match
        a whole variable name (models.scopes.selects): `re:conv[12]/.*`.
      exclude: scopes taken out of `restore`.
      maps: (checkpoint scope, graph scope) pairs.
      lr_mults: (scope, multiplier) pairs.
      skip_mismatched, fine_tune, train_batch_norm: the flags of those names.
      moving_average: restore each variable's ExponentialMovingAverage shadow where the
        checkpoint holds one (--moving-average; transfer.moving_average.sources decides).
      adapt_channels: the transfer.channels rule ("sum", "repeat", "zeros") for the first
        convolution when its input channels differ from the checkpoint's, or "" to refuse.
      first_conv: the checkpoint name of that convolution's kernel (the registry record's).
    """

    restore: tuple | None
    exclude: tuple = ()
    maps: tuple = ()
    lr_mults: tuple = ()
    skip_mismatched: bool = False
    fine_tune: bool = False
    train_batch_norm: bool = False
    moving_average: bool = False
    classes: object = None  # a transfer.class_heads.ClassSources when --keep-classes asks for class-aware heads
    adapt_channels: str = ""
    first_conv: str = ""

    @property
    def restores_nothing(self):
        """`--restore none`: the run reads no checkpoint."""
        return self.restore == ()


@dataclasses.dataclass(frozen=True)
class PlanRow:
    """What happens to one graph variable.

    Attributes:
      name: the graph variable's name.
      shape: its shape.
      source: the checkpoint tensor it is restored from (its moving-average shadow when
        `shadow`), or None.
      action: "restored", "initialised" or "skipped" (a shape difference; initialised).
      reason: why, for "skipped" and for restored names that a --map changed.
      lr_mult: learning-rate multiplier; 0 means frozen.
      updated: a moving statistic its BatchNorm layer updates (training mode); never
        trained by the optimizer (lr_mult 0) and not frozen either.
      shadow: restored from its checkpoint variable's ExponentialMovingAverage shadow
        (--moving-average); its reason says "shadow".
      matched_by: the `re:` patterns that chose it, each with its flag
        ("--restore re:conv[12]/.*"); empty when no pattern did.
      adapt: for action "adapted" (a first convolution of other input channels), the
        transfer.channels rule its value is computed by; "" otherwise.
      fresh_channels: the input channels of an adapted kernel that start fresh and train
        while the rest stays frozen (the zeros rule); () when the row trains or freezes whole.
    """

    name: str
    shape: tuple
    source: str | None
    action: str
    reason: str
    lr_mult: float
    updated: bool = False
    shadow: bool = False
    matched_by: tuple = ()
    adapt: str = ""
    fresh_channels: tuple = ()

    @property
    def trainable(self):
        return self.lr_mult > 0

    @property
    def train_column(self):
        return "updated" if self.updated else "yes" if self.trainable else "frozen"


@dataclasses.dataclass(frozen=True)
class RestorePlan:
    """Rows for every graph model variable plus the checkpoint variables left unused."""

    checkpoint: str | None
    rows: tuple
    unused: tuple  # VariableInfo of checkpoint model variables that nothing restores from
    ignored_non_model: int  # optimizer slots and counters in the checkpoint, never restored
    # Variables the graph's UPDATE_OPS write (a graph the toolkit did not build), so that
    # the statistics note never calls one of them "never updated"; empty for the toolkit's own.
    graph_updates: frozenset = frozenset()
    # --keep-classes: the transfer.class_heads.ClassRows of the head variables (rows of kind
    # "classes") and the plan's class section, one line per new class.
    class_rows: tuple = ()
    class_notes: tuple = ()

    @property
    def restored(self):
        return tuple(row for row in self.rows if row.action == "restored")

    @property
    def adapted(self):
        """Rows whose value is computed from their checkpoint variable (transfer.channels), not read as it is."""
        return tuple(row for row in self.rows if row.action == "adapted")

    @property
    def frozen_restored(self):
        return tuple(row for row in self.restored if not row.trainable and not row.updated)

    @property
    def frozen_class_heads(self):
        """Names of the frozen head variables whose kept class columns the frozen check compares."""
        return {row.name for row in self.rows if row.action == "classes" and not row.trainable}

    def batch_norm_training_scopes(self):
        """Scopes of the BatchNorm layers in training mode (their moving statistics are updated)."""
        return {row.name.rsplit("/", 1)[0] for row in self.rows if row.updated}

    def sources(self):
        """The checkpoint names whose values the run reads: the restored rows' and the adapted rows'."""
        return [row.source for row in self.rows if row.action in ("restored", "adapted")]

    def restore_names(self):
        """{checkpoint name: graph name} for the partial Saver."""
        return {row.source: row.name for row in self.restored}

    def lr_groups(self):
        """{multiplier: [graph names]} of the trainable variables, in graph order."""
        groups = {}
        for row in self.rows:
            if row.trainable:
                groups.setdefault(row.lr_mult, []).append(row.name)
        return groups

    def to_json(self):
        classes = {"class_rows": list(self.class_notes)} if self.class_notes else {}
        return classes | {
            "checkpoint": self.checkpoint,
            "variables": [
                {
                    "name": row.name,
                    "shape": list(row.shape),
                    "source": row.source,
                    "action": row.action,
                    "reason": row.reason,
                    "trainable": row.trainable,
                    "updated": row.updated,
                    "lr_mult": row.lr_mult,
                    **({"matched_by": list(row.matched_by)} if row.matched_by else {}),
                }
                for row in self.rows
            ],
            "unused_checkpoint_variables": [{"name": info.name, "shape": list(info.shape)} for info in self.unused],
            "ignored_optimizer_and_counter_variables": self.ignored_non_model,
        }

    def format(self):
        """The plan as a plain-text table, one row per graph variable."""
        header = ("variable", "shape", "source", "action", "train", "lr x")
        lines = [
            (
                row.name,
                _shape(row.shape),
                row.source or "fresh",
                row.action + (f" ({row.reason})" if row.reason else ""),
                row.train_column,
                f"{row.lr_mult:g}",
            )
            for row in self.rows
        ]
        if any(row.matched_by for row in self.rows):
            header = (*header, "matched by")
            lines = [(*cells, ", ".join(row.matched_by)) for cells, row in zip(lines, self.rows)]
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
        text = [f"restore plan (checkpoint: {self.checkpoint or 'none'})"]
        for cells in (header, *lines):
            text.append("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)).rstrip())
        if self.unused:
            listed = capped(f"{info.name} {_shape(info.shape)}" for info in self.unused)
            text.append(f"  checkpoint variables not restored ({len(self.unused)}): {listed}")
        if self.ignored_non_model:
            text.append(f"  checkpoint optimizer slots and counters ignored: {self.ignored_non_model}")
        text += ["  " + line for line in self.skipped_layer_notes() + self._statistics_notes() + self._shadow_notes()]
        text += ["  " + line for line in self.class_notes]
        return "\n".join(text)

    def skipped_layer_notes(self):
        """One line per layer --skip-mismatched skipped whole, naming the variable that decided it and its shapes."""
        layers = {}
        for row in self.rows:
            if row.action == "skipped":
                layers.setdefault(layer_of(row.name), []).append(row)
        notes = []
        for layer, rows in layers.items():
            decider = next(row for row in rows if not row.reason.startswith(SKIPPED_WITH))
            notes.append(
                f"skipped layer {layer} ({len(rows)} variables initialised): {decider.name} has {decider.reason}"
            )
        return notes

    def _statistics_notes(self):
        statistics = [row for row in self.rows if row.name.endswith(MOVING_STATISTICS)]
        if not statistics:
            return []
        updated = sum(row.updated for row in statistics)
        written = [row.name for row in statistics if not row.updated and row.name in self.graph_updates]
        if written:
            frozen = (
                f"{len(statistics) - updated} frozen, of which the graph's UPDATE_OPS write {len(written)} "
                f"(first: {written[0]}; the graph check refuses them)"
            )
        else:
            frozen = f"{len(statistics) - updated} frozen (inference mode, never updated, unlike TF-Slim's UPDATE_OPS)"
        return [f"BatchNorm moving statistics: {frozen}, {updated} updated by their layers"]

    def _shadow_notes(self):
        """With --moving-average: how many restored or adapted variables read their shadow, how many their raw one."""
        read = self.restored + self.adapted
        taken = sum(row.shadow for row in read)
        return [shadows.counted(taken, len(read))] if taken else []

    def markdown(self):
        """The plan as a Markdown table, for TensorBoard's text dashboard."""
        lines = [
            f"checkpoint: `{shown(self.checkpoint) if self.checkpoint else 'none'}`",
            "",
            "| variable | shape | source | action | trainable | lr x |",
            "|---|---|---|---|---|---|",
        ]
        for row in self.rows:
            action = row.action + (f" ({row.reason})" if row.reason else "")
            action += f" (matched by {', '.join(row.matched_by)})" if row.matched_by else ""
            lines.append(
                f"| {row.name} | {list(row.shape)} | {row.source or 'fresh'} | {action} "
                f"| {row.train_column} | {row.lr_mult:g} |"
            )
        notes = self.skipped_layer_notes() + self._statistics_notes() + self._shadow_notes()
        lines += ["", *notes] if notes else []
        return "\n".join(lines)


def _mark_updated_statistics(rows, train_batch_norm):
    by_name = {row.name: row for row in rows}
    marked = []
    for row in rows:
        if row.name.endswith(MOVING_STATISTICS):
            scope = row.name.rsplit("/", 1)[0]
            gamma = by_name.get(f"{scope}/gamma") or by_name.get(f"{scope}/beta")
            if gamma is not None and gamma.trainable and (train_batch_norm or gamma.action != "restored"):
                row = dataclasses.replace(row, updated=True)
        marked.append(row)
    return tuple(marked)


def _shape(shape):
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def _scopes(names):
    return capped(top_scopes(names)) or "(none)"


def _named(selector):
    """A selector as a message names it: a pattern as written, a scope quoted."""
    return selector if is_pattern(selector) else repr(selector)


def _listing(selector, names, label=True):
    """What a message lists beside a selector that matched nothing: the scopes, or for a pattern the names."""
    if is_pattern(selector):
        listed = f"{capped(names) or '(none)'}; a pattern must match a whole name"
        return f"graph variables: {listed}" if label else listed
    return f"graph scopes: {_scopes(names)}" if label else _scopes(names)


def _selectors(selection):
    """(flag, selector) of every --restore, --restore-exclude and --lr-mult item."""
    return [
        *(("--restore", selector) for selector in selection.restore or ()),
        *(("--restore-exclude", selector) for selector in selection.exclude),
        *(("--lr-mult", selector) for selector, _ in selection.lr_mults),
    ]


def _check_patterns(selection):
    """Refuses a `re:` item that is no regular expression (in a selection built in code: the parser checks flags)."""
    for flag, selector in _selectors(selection):
        if is_pattern(selector):
            try:
                compiled(selector)
            except ValueError as error:
                raise PlanError(f"{flag} {selector}: {error}") from None


def _mark_pattern_matches(rows, selection):
    """Each row with the `re:` patterns that chose it (PlanRow.matched_by), so the plan shows what each matched."""
    patterns = [(flag, selector) for flag, selector in _selectors(selection) if is_pattern(selector)]
    if not patterns:
        return rows
    return tuple(
        dataclasses.replace(
            row, matched_by=tuple(f"{flag} {selector}" for flag, selector in patterns if selects(row.name, selector))
        )
        for row in rows
    )


def _map_hint(graph_names, sides):
    """The "; ... pass --map A=B" tail when one outer scope explains why graph_names are not found."""
    maps = outer_scope_maps(graph_names, sides.model_names)
    if not maps:
        return ""
    return "; the names differ by an outer scope: pass " + capped(
        (f"--map {source}={target}" for source, target in maps), separator=" "
    )


def make_plan(graph_variables, checkpoint_variables, selection, checkpoint=None):
    """Decides what happens to each graph variable.

    Args:
      graph_variables: VariableInfo of the graph's model variables, in graph order.
      checkpoint_variables: VariableInfo of everything the checkpoint holds (slots
        included; they are told apart here), or () when nothing is restored.
      selection: the RestoreSelection: `restore` (scopes to restore, graph-side names;
        () for none; None for every graph variable the checkpoint holds), `exclude`
        (scopes taken out of it), `maps` ((checkpoint scope, graph scope) pairs: restore
        SRC/... into DST/...), `skip_mismatched` (skip and report a layer whose shapes
        differ instead of failing), `fine_tune` (train restored variables too; default:
        freeze them), `lr_mults` ((scope, multiplier) pairs applied last; 0 freezes),
        `train_batch_norm` (restored BatchNorm layers that train also update their
        moving statistics, see the module docstring; fresh ones always do).
      checkpoint: the checkpoint prefix, for messages and the record.

    Returns:
      A RestorePlan.

    Raises:
      PlanError: for a scope or map that matches nothing, a variable the checkpoint
        lacks, a shape or dtype difference (unless skipped), or nothing to train.
    """
    restore, exclude, maps = selection.restore, selection.exclude, selection.maps
    _check_patterns(selection)
    sides = _Sides.of(graph_variables, checkpoint_variables, maps, checkpoint)
    _check_maps_match(sides)
    selected = _select(sides, restore, exclude)
    _check_lr_mult_scopes(sides, selection.lr_mults)
    _check_map_targets_selected(sides, selected)
    _check_checkpoint_holds(sides, selected)
    adapted = _channel_adaptations(sides, graph_variables, selected, selection)
    unadapted = [name for name in selected if name not in adapted]
    skipped = _shape_differences(sides, graph_variables, unadapted, selection.skip_mismatched)
    rows = _rows(sides, graph_variables, selected, skipped, selection.fine_tune, selection.lr_mults)
    rows = _mark_adapted(rows, adapted, graph_variables)
    rows = _mark_updated_statistics(rows, selection.train_batch_norm)
    rows = _mark_pattern_matches(rows, selection)
    sources = {row.source for row in rows}
    rows, taken = _take_shadows(rows, checkpoint_variables, selection.moving_average, checkpoint)
    plan = RestorePlan(
        checkpoint=checkpoint,
        rows=rows,
        unused=tuple(sides.by_checkpoint_name[name] for name in sides.model_names if name not in sources),
        ignored_non_model=sides.ignored_non_model - taken,
    )
    _check_something_trains(plan)
    return plan


@dataclasses.dataclass(frozen=True)
class _Sides:
    """The two sides a plan matches: the graph's variable names and the checkpoint's, joined by --map.

    Attributes:
      graph_names: the graph's model variable names, in graph order.
      model_names: the checkpoint's model variable names (no optimizer slots or counters), sorted.
      by_checkpoint_name: {checkpoint model variable name: VariableInfo}.
      ignored_non_model: how many checkpoint variables are optimizer slots or counters.
      maps: (checkpoint scope, graph scope) pairs, without leading or trailing "/".
      where: the checkpoint as messages name it.
    """

    graph_names: list
    model_names: list
    by_checkpoint_name: dict
    ignored_non_model: int
    maps: list
    where: str

    @classmethod
    def of(cls, graph_variables, checkpoint_variables, maps, checkpoint):
        all_checkpoint_names = [info.name for info in checkpoint_variables]
        model_names = model_variable_names(all_checkpoint_names)
        model_set = set(model_names)
        return cls(
            graph_names=[info.name for info in graph_variables],
            model_names=model_names,
            by_checkpoint_name={info.name: info for info in checkpoint_variables if info.name in model_set},
            ignored_non_model=len(all_checkpoint_names) - len(model_names),
            maps=[(source.strip("/"), target.strip("/")) for source, target in maps],
            where=checkpoint or "the checkpoint",
        )

    def source_name(self, name):
        """The checkpoint name graph variable `name` restores from: the first --map whose target holds it."""
        for source, target in self.maps:
            if in_scope(name, target):
                return source + name[len(target) :]
        return name


def _check_maps_match(sides):
    """Each --map names a scope of the graph (its target) and one of the checkpoint (its source)."""
    graph_names, model_names = sides.graph_names, sides.model_names
    for source, target in sides.maps:
        if not any(in_scope(name, target) for name in graph_names):
            raise PlanError(
                f"--map {source}={target}: the graph has no scope {target!r}; graph scopes: {_scopes(graph_names)}"
            )
        if not any(in_scope(name, source) for name in model_names):
            raise PlanError(
                f"--map {source}={target}: {sides.where} has no scope {source!r}; "
                f"checkpoint scopes: {_scopes(model_names)}"
            )


def _select(sides, restore, exclude):
    """The graph names to restore: those in --restore's scopes (None: all the checkpoint holds), less exclude's."""
    graph_names = sides.graph_names
    if restore is None:
        selected = [name for name in graph_names if sides.source_name(name) in sides.by_checkpoint_name]
        if not selected:
            hint = _map_hint(graph_names, sides) if not sides.maps else ""
            scopes = f"; graph scopes: {_scopes(graph_names)}; checkpoint scopes: {_scopes(sides.model_names)}"
            raise PlanError(f"--restore all: no graph variable is in {sides.where}{hint or scopes}")
    else:
        selected = []
        for scope in restore:
            matches = [name for name in graph_names if selects(name, scope)]
            if not matches:
                raise PlanError(f"--restore {_named(scope)} matches no graph variable; {_listing(scope, graph_names)}")
            selected += [name for name in matches if name not in selected]
    for scope in exclude:
        if not any(selects(name, scope) for name in selected):
            raise PlanError(
                f"--restore-exclude {_named(scope)} matches none of the variables selected to restore "
                f"({_listing(scope, selected, label=False)})"
            )
        selected = [name for name in selected if not selects(name, scope)]
    return selected


def _check_lr_mult_scopes(sides, lr_mults):
    graph_names = sides.graph_names
    for scope, _ in lr_mults:
        if not any(selects(name, scope) for name in graph_names):
            raise PlanError(f"--lr-mult {_named(scope)} matches no graph variable; {_listing(scope, graph_names)}")


def _check_map_targets_selected(sides, selected):
    """Each --map target is among the selection, and no checkpoint variable is restored into two."""
    for source, target in sides.maps:
        if not any(in_scope(name, target) for name in selected):
            raise PlanError(
                f"--map {source}={target}: {target!r} is not among the variables selected to restore "
                f"({_scopes(selected)})"
            )
    targets = {}
    for name in selected:
        targets.setdefault(sides.source_name(name), []).append(name)
    for source, names in targets.items():
        if len(names) > 1:
            raise PlanError(
                f"{source} would be restored into {' and '.join(names)}; give each checkpoint variable one --map target"
            )


def _check_checkpoint_holds(sides, selected):
    pairs = [(name, sides.source_name(name)) for name in selected]
    missing = [(name, source) for name, source in pairs if source not in sides.by_checkpoint_name]
    if missing:
        wanted = capped(source if source == name else f"{source} (for {name})" for name, source in missing)
        unmapped = [name for name, source in missing if source == name]
        hint = _map_hint(unmapped, sides) if len(unmapped) == len(missing) else ""
        scopes = "" if hint else f"; checkpoint scopes: {_scopes(sides.model_names)}"
        raise PlanError(f"{sides.where} lacks {wanted}{scopes}{hint}")


def _shape_differences(sides, graph_variables, selected, skip_mismatched):
    """Returns {graph name: why} of the selected variables whose shape differs from the checkpoint's.

    Raises:
      PlanError: a dtype difference, or a shape difference unless skip_mismatched.
    """
    by_graph_name = {info.name: info for info in graph_variables}
    skipped, mismatched = {}, []
    for name in selected:
        ours, theirs = by_graph_name[name], sides.by_checkpoint_name[sides.source_name(name)]
        if ours.dtype != theirs.dtype:
            raise PlanError(f"{theirs.name} is {theirs.dtype} in {sides.where} but {name} is {ours.dtype} in the graph")
        if tuple(ours.shape) != tuple(theirs.shape):
            why = f"shape {_shape(theirs.shape)} in checkpoint, {_shape(ours.shape)} in graph"
            skipped[name] = why
            mismatched.append(f"{name}: {why}")
    if mismatched and not skip_mismatched:
        raise PlanError(
            f"shape mismatch between {sides.where} and the graph: {capped(mismatched, separator='; ')} "
            "(pass --skip-mismatched to initialise these instead)"
        )
    return _whole_layers(skipped, selected)


def _channel_adaptations(sides, graph_variables, selected, selection):
    """{graph name: (rule, checkpoint channels, graph channels)} of the selected first convolution, when its
    input channels differ from the checkpoint's and the selection names a rule (transfer.channels).

    Raises:
      PlanError: for a rule that cannot make the graph's channels of the checkpoint's.
    """
    if not selection.adapt_channels or not selection.first_conv:
        return {}
    by_graph_name = {info.name: info for info in graph_variables}
    for name in selected:
        theirs = sides.by_checkpoint_name.get(sides.source_name(name))
        if theirs is None or theirs.name != selection.first_conv:
            continue
        ours = by_graph_name[name]
        if ours.dtype != theirs.dtype or not channels.differs_in_channels(tuple(theirs.shape), tuple(ours.shape)):
            return {}
        have, want = theirs.shape[2], ours.shape[2]
        why = channels.refusal(selection.adapt_channels, have, want)
        if why:
            raise PlanError(f"{name}: {why}")
        return {name: (selection.adapt_channels, have, want)}
    return {}


def _mark_adapted(rows, adapted, graph_variables):
    """Turns the restored rows of adapted kernels into "adapted" rows; a frozen zeros row trains its fresh channels."""
    trainable = {info.name: info.trainable for info in graph_variables}
    marked = []
    for row in rows:
        if row.name in adapted:
            rule, have, want = adapted[row.name]
            fresh = channels.fresh_channels(rule, have, want) if row.lr_mult == 0 and trainable[row.name] else ()
            row = dataclasses.replace(
                row,
                action="adapted",
                reason=channels.describe(rule, have, want),
                adapt=rule,
                fresh_channels=fresh,
                lr_mult=1.0 if fresh else row.lr_mult,
            )
        marked.append(row)
    return tuple(marked)


def layer_of(name):
    """The layer a variable belongs to: its scope (`conv2` for `conv2/kernel`, `conv1/BatchNorm` for its gamma)."""
    return name.rsplit("/", 1)[0] if "/" in name else name


def _whole_layers(skipped, selected):
    """Extends {mismatching graph name: why} to every selected variable of the same layers.

    A layer is restored whole or not at all: a fresh kernel beside a restored (and
    frozen) bias, or a fresh gamma beside restored moving statistics, is neither model.
    A layer-mate's reason names the variable that decided it.
    """
    first = {}
    for name in skipped:
        first.setdefault(layer_of(name), name)
    whole = dict(skipped)
    for name in selected:
        decided_by = first.get(layer_of(name))
        if decided_by is not None and name not in whole:
            whole[name] = f"{SKIPPED_WITH} {decided_by}"
    return whole


def _rows(sides, graph_variables, selected, skipped, fine_tune, lr_mults):
    """One PlanRow per graph variable: skipped, restored (frozen unless fine_tune) or initialised, then lr_mults."""
    rows = []
    for info in graph_variables:
        name = info.name
        if name in skipped:
            row = dict(source=None, action="skipped", reason=skipped[name], lr_mult=1.0)
        elif name in selected:
            source = sides.source_name(name)
            restored_mult = 1.0 if fine_tune else 0.0
            row = dict(
                source=source, action="restored", reason="" if source == name else "mapped", lr_mult=restored_mult
            )
        else:
            row = dict(source=None, action="initialised", reason="", lr_mult=1.0)
        for scope, multiplier in lr_mults:
            if selects(name, scope):
                row["lr_mult"] = float(multiplier)
        if not info.trainable:
            row["lr_mult"] = 0.0
        rows.append(PlanRow(name=name, shape=tuple(info.shape), **row))
    return rows


def _check_something_trains(plan):
    if not plan.lr_groups():
        raise PlanError(
            "nothing left to train: every variable is frozen; restore fewer scopes, or use --fine-tune or --lr-mult "
            "SCOPE=F with F > 0"
        )


def _take_shadows(rows, checkpoint_variables, moving_average, checkpoint):
    """The rows, each restored or adapted one reading the tensor transfer.moving_average.sources picks, and how
    many shadows.

    Without --moving-average the rows are returned as they are. With it, a restored row
    whose checkpoint variable has a `<variable>/ExponentialMovingAverage` shadow reads the
    shadow: its source names the shadow (so the Saver, the restore proof and the frozen
    check all use it) and its reason says "shadow"; one without keeps its raw value.

    Raises:
      CheckpointError: when the checkpoint holds no shadow of any restored variable, or one
        whose shape differs from its variable's.
    """
    if not moving_average:
        return rows, 0
    held = {info.name: info.shape for info in checkpoint_variables}
    restored = [row.source for row in rows if row.action in ("restored", "adapted")]  # read whole from it
    chosen = shadows.sources(restored, held, True, checkpoint or "the checkpoint")
    marked = []
    for row in rows:
        tensor, kind = chosen.get(row.source, (row.source, shadows.RAW))
        if kind == shadows.AVERAGED:
            reason = f"{row.reason}, shadow" if row.reason else "shadow"
            row = dataclasses.replace(row, source=tensor, reason=reason, shadow=True)
        marked.append(row)
    return tuple(marked), len(shadows.taken(chosen))
