"""Which tensor of a checkpoint holds a variable's value: its own, or its moving-average shadow.

tf.train.ExponentialMovingAverage keeps a shadow of each variable it averages at
`<variable>/ExponentialMovingAverage` (the model zoos that evaluate with it, EfficientNet's
among them, publish both). The raw values are taken unless asked; with --moving-average a
variable that has a shadow takes the shadow, one without (often BatchNorm's moving
statistics, or a step counter) keeps its own value, and the report says which each took.
A checkpoint with no shadow at all is refused: asking for shadows it lacks is a mistake.
"""

from runtime.errors import CheckpointError
from runtime.paths import shown

SHADOW = "ExponentialMovingAverage"
RAW, AVERAGED = "raw", "moving average"


def shadow_of(name):
    """The name the moving average of variable `name` is saved under."""
    return f"{name}/{SHADOW}"


def sources(variables, held, use_shadows, checkpoint):
    """{variable: (checkpoint tensor to read, RAW or AVERAGED)} for the given model variables.

    The one place of the rule: with use_shadows, a variable whose shadow the checkpoint
    holds reads the shadow; otherwise (and for every variable without one) its own tensor.

    Args:
      variables: the model variable names to read.
      held: {tensor name: shape} of everything the checkpoint holds.
      use_shadows: whether --moving-average was given.
      checkpoint: the checkpoint's path, for the message.

    Raises:
      CheckpointError: when shadows are asked for and the checkpoint holds none of these variables'.
    """
    chosen = {}
    for name in variables:
        chosen[name] = source_of(name, held, use_shadows)
        if chosen[name][1] == AVERAGED and tuple(held[chosen[name][0]]) != tuple(held[name]):
            raise CheckpointError(
                f"{shown(checkpoint)}: {chosen[name][0]} is {list(held[chosen[name][0]])}, its variable "
                f"{list(held[name])}"
            )
    if use_shadows and all(kind == RAW for _, kind in chosen.values()):
        raise CheckpointError(
            f"--moving-average: {shown(checkpoint)} holds no {SHADOW} shadow of the {len(chosen)} variables read "
            f"(no '<variable>/{SHADOW}' tensor); leave out --moving-average"
        )
    return chosen


def source_of(name, held, use_shadows):
    """(checkpoint tensor to read, RAW or AVERAGED) for one variable: its shadow when asked for and held."""
    shadow = shadow_of(name)
    return (shadow, AVERAGED) if use_shadows and shadow in held else (name, RAW)


def summary(rows):
    """The report line: how many variables took their moving average (see mark), how many their raw value."""
    return counted(sum(row["transform"].endswith(AVERAGED) for row in rows), len(rows))


def counted(averaged, total):
    """The line the converter's report and the restore plan end with: of `total` variables read, `averaged` shadows."""
    return f"--moving-average: {averaged} variables take their {SHADOW} shadow, {total - averaged} their raw value"


def mark(rows, chosen):
    """Report rows {source, target, transform, ...} whose source is the tensor read, the shadow where one was taken."""
    marked = []
    for row in rows:
        tensor, kind = chosen[row["source"]]
        marked.append(row if kind == RAW else {**row, "source": tensor, "transform": f"{row['transform']}, {AVERAGED}"})
    return marked


def taken(chosen):
    """The shadows read: no longer dropped as slots."""
    return {tensor for tensor, kind in chosen.values() if kind == AVERAGED}
