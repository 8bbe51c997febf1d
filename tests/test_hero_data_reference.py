"""The reader's per-video examples equal the original collate's batches, converted to the
port's layout (../shared/reference/hero/batches.npz, the 4-video corpus of spec §7.2)."""
import json

import numpy as np
import pytest

from data_pipeline import hero_reader, hero_store


@pytest.fixture(scope='module')
def reference(shared_dir):
    folder = shared_dir / 'reference' / 'hero'
    if not (folder / 'batches.npz').exists():
        pytest.skip('../shared/reference/hero/batches.npz is not present')
    from hero import batch_layout
    arrays = dict(np.load(folder / 'batches.npz'))
    meta = json.loads((folder / 'batches_meta.json').read_text())
    return (batch_layout.video_batch(arrays, meta, 'repr'),
            batch_layout.video_batch(arrays, meta, 'vsm'), meta)


def store_videos(repr_batch, meta, sizes):
    """The corpus as store examples (features, subtitle ids, the original's alignment)."""
    videos = []
    for b, sub2frames in enumerate(meta['repr__sub_idx2frame_idx']):
        n = int(repr_batch['frame_mask'][b].sum())
        ids = [list(row[mask == 1][1:]) for row, mask in
               zip(repr_batch['sub_ids'][b], repr_batch['sub_mask'][b])][:len(sub2frames)]
        example = hero_store.make_example(
            f'v{b}', repr_batch['frame_feats'][b, :n].astype(np.float32), ids,
            [0.0] * len(ids), [0.0] * len(ids),
            alignment=([(s, f) for s, f in sub2frames], []))
        example = hero_store.parse_example(hero_store.serialize(example))
        videos.append(hero_reader.prepare(example, sizes, hero_reader.ReaderStats()))
    return videos


def test_video_and_vsm_examples_equal_the_original_collate(reference):
    repr_batch, vsm_batch, meta = reference
    sizes = hero_reader.Sizes(max_clip_len=12, subs_per_video=5, frames_per_sub=4,
                              max_txt_len=7, feat_dim=32, feat_dtype='float32')
    videos = store_videos(repr_batch, meta, sizes)
    stats = hero_reader.ReaderStats()
    got = [hero_reader.video_example(v, sizes, stats) for v in videos]
    for key, want in repr_batch.items():
        np.testing.assert_array_equal(np.stack([g[key] for g in got]), want, err_msg=key)
    # VSM: every video has <= 5 subtitles with frames, so the query draw is deterministic
    got = [hero_reader.vsm_example(v, sizes, stats, np.random.default_rng(0)) for v in videos]
    for key, want in vsm_batch.items():
        mine = np.stack([g[key] for g in got])
        if key in ('sub_ids', 'sub_mask', 'query_ids', 'query_mask'):
            width = want.shape[-1]
            fill = hero_reader.PAD_ID if key.endswith('ids') else 0
            assert (mine[..., width:] == fill).all(), key
            mine = mine[..., :width]
        np.testing.assert_array_equal(mine, want, err_msg=key)
    assert stats == hero_reader.ReaderStats()


def test_mlm_examples_hold_the_original_frames_and_text(reference):
    repr_batch, _, meta = reference
    sizes = hero_reader.Sizes(max_clip_len=12, subs_per_video=5, frames_per_sub=4,
                              max_txt_len=7, feat_dim=32, feat_dtype='float32')
    videos = store_videos(repr_batch, meta, sizes)
    got = [hero_reader.mlm_example(v, sizes, hero_reader.ReaderStats()) for v in videos]
    ids = np.stack([g['txt_ids'] for g in got])
    assert (ids[..., 0][np.stack([g['txt_mask'] for g in got])[..., 0] == 1] ==
            hero_reader.CLS_ID).all()
    np.testing.assert_array_equal(ids[..., 1:], repr_batch['sub_ids'][..., 1:])
    np.testing.assert_array_equal(np.stack([g['sub_frames'] for g in got]),
                                  repr_batch['sub_frames'])
