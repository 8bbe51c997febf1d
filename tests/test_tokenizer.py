"""data_pipeline.tokenizer: the original BPE (../shared/tokenizers) and trained sentencepiece."""
import numpy as np
import pytest

from data_pipeline import tokenizer as tk
from data_pipeline.demo_corpus import random_text


@pytest.fixture(scope='module')
def bpe(shared_dir):
    path = shared_dir / 'tokenizers' / 'mreserve_lowercase_bpe.json'
    if not path.is_file():
        pytest.skip('../shared/tokenizers/mreserve_lowercase_bpe.json is not present')
    return tk.load_tokenizer(path)


@pytest.fixture(scope='module')
def sp(tmp_path_factory):
    corpus = tmp_path_factory.mktemp('sp') / 'corpus.txt'
    corpus.write_text(random_text(0, num_sentences=2000) +
                      'Café au lait. In this video I will be cooking.\n' * 20)
    prefix = str(corpus.parent / 'demo')
    tk.main(['--input', str(corpus), '--out', prefix, '--vocab-size', '400'])
    return tk.load_tokenizer(prefix + '.model')


def test_bpe_spec_examples(bpe):
    assert bpe.vocab_size == 32768
    assert bpe.encode("In This Video I'll be<|MASK|>") == [226, 246, 571, 187, 424, 238, 3]
    assert bpe.encode('whisk them with a pinch of salt') == [5775, 414, 287, 186, 4505, 222, 1737]
    assert bpe.encode('title:') == [3388, 35]
    assert bpe.decode(bpe.encode('café')) == ' cafe'             # lowercased, accents stripped
    assert bpe.encode('<|START|>hi<|END|>')[::2] == [tk.START, tk.END]
    assert bpe.decode([226, 246, 3]) == ' in this<|MASK|>'
    assert bpe.decode([226, 246, 3], skip_special_tokens=True) == ' in this'
    assert bpe.encode_batch(['title:', 'whisk']) == [[3388, 35], bpe.encode('whisk')]


def test_special_ids():
    assert (tk.PAD, tk.START, tk.END, tk.MASK, tk.MASKAUDIO, tk.AUDIOSPAN, tk.LTOVPOOL,
            tk.UNUSED0, tk.UNK, tk.RESETCTX) == tuple(range(10))
    assert tk.SPECIAL_TOKENS[tk.RESETCTX] == '<|RESETCTX|>'


def test_bpe_token_is_valid(bpe):
    valid = bpe.valid_token_mask()
    assert valid.shape == (32768,) and not valid[:11].any()
    assert not valid[sorted(tk.BPE_EXCLUDED_IDS)].any()
    assert bpe.decode([149]) == ' '
    salt = bpe.encode(' salt')
    assert valid[salt].all() and valid[bpe.encode(" i'll")].all()
    assert not bpe.token_is_valid(bpe.encode(',')).any()
    np.testing.assert_array_equal(bpe.token_is_valid([[3, 1737], [-1, 35]]),
                                  [[False, True], [False, False]])
    # the excluded ids are exactly the space-only pieces: the generic rule agrees
    generic = tk.Tokenizer.valid_token_mask(type('G', (tk.Tokenizer,), {
        'vocab_size': bpe.vocab_size, 'decode': lambda self, ids: bpe.decode(ids)})())
    np.testing.assert_array_equal(generic, valid)


def test_sentencepiece_special_ids_and_lowercase(sp):
    assert [sp._sp.id_to_piece(i) for i in range(10)] == list(tk.SPECIAL_TOKENS)
    assert 100 < sp.vocab_size <= 400
    ids = sp.encode('In this video I will be<|MASK|>')
    assert ids[-1] == tk.MASK and all(i >= 10 for i in ids[:-1])
    assert sp.encode('IN THIS VIDEO') == sp.encode('in this video')
    assert sp.encode('Café') == sp.encode('cafe')
    assert sp.decode(sp.encode('the red circle<|AUDIOSPAN|> again')) == \
        'the red circle<|AUDIOSPAN|> again'
    assert sp.decode(sp.encode('<|START|>a cat<|END|>'), skip_special_tokens=True) == 'a cat'
    for token_id, token in enumerate(tk.SPECIAL_TOKENS):
        assert sp.encode(token) == [token_id]


def test_sentencepiece_token_is_valid(sp):
    valid = sp.valid_token_mask()
    assert not valid[:11].any() and valid.sum() > 0.5 * sp.vocab_size
    for i in np.flatnonzero(valid):
        piece = sp.decode([i])
        assert piece.strip() and all(c.isalnum() or c in " '" for c in piece)


def test_load_tokenizer_rejects_unknown(tmp_path):
    with pytest.raises(ValueError, match='expected a tokenizers .json or a sentencepiece'):
        tk.load_tokenizer(tmp_path / 'vocab.txt')
