"""Config pieces shared by every experiment. Configs are data: only ml_collections here."""
import ml_collections

# Logical axis names used by every model, and the mesh axes they map onto by default.
# Activations: act_batch, act_len, act_embed, act_heads, act_mlp, act_vocab.
# Parameters: embed, mlp, heads, kv, vocab, layers, norm, feat, pos, conv, classes.
DEFAULT_RULES = (
    ('act_batch', ('data', 'fsdp')),
    ('act_len', None),
    ('act_embed', None),
    ('act_heads', 'model'),
    ('act_mlp', 'model'),
    ('act_vocab', 'model'),
    ('embed', 'fsdp'),
    ('mlp', 'model'),
    ('heads', 'model'),
    ('kv', None),
    ('vocab', 'model'),
    ('layers', None),
    ('norm', None),
    ('feat', None),
    ('pos', None),
    ('conv', None),
    ('classes', None),
)


def parse_arg(arg: str | None, **defaults):
    """'variant=tiny,steps=20' -> ConfigDict(variant='tiny', steps=20), typed like the defaults."""
    out = ml_collections.ConfigDict(defaults)
    if not arg:
        return out
    for item in arg.split(','):
        if not item:
            continue
        if '=' not in item:
            raise ValueError(f'config argument {item!r} is not key=value')
        key, value = item.split('=', 1)
        if key not in defaults:
            raise KeyError(f'unknown config argument {key!r}; known: {sorted(defaults)}')
        kind = type(defaults[key])
        if kind is bool:
            value = value.lower() in ('1', 'true', 'yes')
        out[key] = kind(value)
    return out


def base_config() -> ml_collections.ConfigDict:
    """Engine settings every experiment has; model packages add `model` and `data`."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.init_from = ''
    c.task = ''             # 'package.module:function' building the Task from this config

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1        # -1 fills the devices left over by the other axes
    c.mesh.fsdp = 1
    c.mesh.model = 1
    c.mesh.dcn_data = 1     # number of slices (ICI x DCN hybrid mesh when > 1)
    c.mesh.rules = DEFAULT_RULES

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-3
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.warmup_steps = 0
    c.optim.decay = 'cosine'        # cosine | linear | constant
    c.optim.final_lr_frac = 0.0
    c.optim.clip_norm = 0.0         # 0 disables global-norm clipping
    c.optim.mu_dtype = 'float32'    # or bfloat16
    c.optim.bias_correction = True
    c.optim.schedule_offset = 0     # LR of update n is schedule(n + offset); HERO uses 1

    c.train = ml_collections.ConfigDict()
    c.train.steps = 100
    c.train.stop_after = 0          # >0: checkpoint and exit at this step (run in chunks)
    c.train.global_batch = 8
    c.train.micro_batches = 1       # gradient accumulation inside the jitted step
    c.train.accumulate = 'mean'     # mean | sum of the micro-batch gradients (HERO sums)
    c.train.log_every = 10
    c.train.eval_every = 0
    c.train.ckpt_every = 50
    c.train.keep_ckpts = 3
    c.train.async_ckpt = True
    c.train.profile_start = -1      # first step of a profiler trace, -1 for none
    c.train.profile_steps = 3
    c.train.nonfinite = 'stop'      # stop | skip
    c.train.dtype = 'float32'       # compute dtype handed to the model
    c.train.compiler_options = 'auto'   # auto | fast_compile | 'xla_option=value,...'
    # (trainer/compile.py)
    return c
