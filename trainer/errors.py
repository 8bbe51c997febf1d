"""Errors the engine raises with enough context for the user to act on."""


class ConfigError(ValueError):
    """A config value that cannot work. `key` is the dotted config path."""

    def __init__(self, key: str, message: str):
        super().__init__(f'config key {key!r}: {message}')
        self.key = key


class NonFiniteError(FloatingPointError):
    """The loss or the gradient norm stopped being finite."""

    def __init__(self, step: int, metrics: dict):
        bad = {k: v for k, v in metrics.items() if k in ('loss', 'grad_norm')}
        super().__init__(f'non-finite value at step {step}: {bad}; stopping. The last good '
                         'checkpoint is kept untouched.')
        self.step = step
