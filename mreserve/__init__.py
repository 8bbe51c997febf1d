"""MERLOT Reserve (Zellers et al., CVPR 2022) in JAX/Flax, checkpoint-compatible with the original.

model_config    ModelConfig: the static configuration of the modules
layers          transformer, rotary "oddity", attention pooling, initialisers, logical axes
modeling        the four towers, the joint model and the zero-shot API (MerlotReserve)
pretrain_model  the pretraining forward pass (MerlotReservePretrainer)
losses          the three contrastive losses, global-batch or per device group
params          init, abstract shapes, counts, scanned <-> original layer layout
convert         released msgpack checkpoint -> params-only Orbax checkpoint
synthetic       random batches in the loader layout
task, train     the engine Task and `python -m mreserve.train`
zero_shot       PretrainedMerlotReserve: a converted checkpoint with jitted, param-bound methods
"""
