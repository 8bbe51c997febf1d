"""MERLOT Reserve video classification on Kinetics-style data, with or without audio.

  --config configs/mreserve/kinetics.py:variant=tiny,audio=true
  --config configs/mreserve/kinetics.py:variant=large,audio=false   data.source=tfds,
                                   data.tfds_dir (KineticsVideos prepared from a folder of
                                   videos + label CSVs), init_from

The original repository has no Kinetics code (spec §7.3): the paper reports Kinetics-600
top-1/top-5 with and without audio (spec §9). Here one sequence per clip is MASK followed,
with audio, by 18 AUDIOSPAN tokens per segment; frames are segments 0..S-1; a linear
`classifier` reads the joint output at MASK. The optimizer is the TVQA/VCR finetuning one;
lr, epochs and segments are this port's choice (not from the paper).
"""
from configs.mreserve.tvqa import epochs_to_steps, finetune_base


def get_config(arg=None):
    c, tiny, args = finetune_base(arg, 'classification', audio=True)
    c.data.source = 'synthetic' if tiny else 'tfds'
    c.data.use_audio = args.audio
    c.data.num_classes = 8 if tiny else 600
    c.data.synthetic_classes = c.data.num_classes
    c.data.num_segments = 4 if tiny else 8
    c.data.lang_seq_len = (1 + 18 * c.data.num_segments) if args.audio else 8
    c.optim.lr = 1e-3 if tiny else 1e-5
    epochs_to_steps(c, tiny, 392_000, 3, 60)
    return c
