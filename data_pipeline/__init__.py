"""Raw media -> arrays and records, shared by MERLOT Reserve and HERO (never imports models).

Low-level layer (one implementation each):
  media        PyAV decoding: probe, frames at timestamps, black bars, resize, JPEG, audio
  spectrogram  log-mel features, quantised JPEG storage and the [3, 60, 65] zero-shot windows
  transcripts  WebVTT (YouTube word timing), SRT, JSON word lists, STM -> timed words / cues
  tokenizer    original BPE JSON and project sentencepiece behind one interface
  segments     zero-shot video_to_segments on top of the above
  demo_corpus  procedurally generated videos + transcripts for smoke tests and tiny models
"""
