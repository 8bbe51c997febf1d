"""HERO (Li et al., EMNLP 2020) in JAX/Flax; the facts come from ../shared/specs/hero.md.

config        HeroConfig, the hashable model sizes
layers        the one BERT post-LN layer (attention, FFN, scan/remat stack, pooler)
embeddings    text, frame and position-only embeddings (padding_idx semantics)
heads         LM head, MLP heads, frame_transform, QueryFeatEncoder, start/end convs
modeling      f-TRM, collect, t-TRM, HeroModel (HeroForPretraining)
vsm, pretrain task forwards, losses and the original's train/eval reductions
masking       on-device MLM / MFM / FOM corruption
task, train   engine Task and `python -m hero.train`
convert       original / RoBERTa weights -> Orbax params (checkpoint_io)
batch_layout  original collate outputs -> this port's batch layout
synthetic     random well-formed batches
"""
