"""One tokenizer interface over the original MERLOT Reserve BPE and project-trained sentencepiece.

Both share the special-token ids of spec mreserve §4 (PAD 0 ... RESETCTX 9), lowercase
their input, and find special-token strings such as ``<|MASK|>`` inside the text:

- :class:`BPETokenizer` loads the original ``tokenizers`` JSON by path (it is never copied
  into the project), e.g. ``../shared/tokenizers/mreserve_lowercase_bpe.json``; its ids match
  the released checkpoints.
- :class:`SentencePieceTokenizer` loads a model trained here for from-scratch runs:
  ``python -m data_pipeline.tokenizer --input FILES --out PREFIX --vocab-size N``
  writes ``PREFIX.model`` / ``PREFIX.vocab`` with the special tokens at ids 0..9.

:func:`load_tokenizer` picks the class by file extension. ``valid_token_mask()`` gives the
TOKEN_IS_VALID table used for span targets: id > 10, the decoded piece matches
``^[ A-Za-z0-9']*$`` and is not made of spaces only (for the BPE these are exactly the
excluded ids {149, 4858, 9504, 15162, 22312, 22433, 32156}).
"""
from __future__ import annotations

import argparse
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

SPECIAL_TOKENS = ('<|PAD|>', '<|START|>', '<|END|>', '<|MASK|>', '<|MASKAUDIO|>',
                  '<|AUDIOSPAN|>', '<|LTOVPOOL|>', '<|unused0|>', '<|UNK|>', '<|RESETCTX|>')
PAD, START, END, MASK, MASKAUDIO, AUDIOSPAN, LTOVPOOL, UNUSED0, UNK, RESETCTX = range(10)
NUM_SPECIAL = len(SPECIAL_TOKENS)
BPE_EXCLUDED_IDS = frozenset({149, 4858, 9504, 15162, 22312, 22433, 32156})
_VALID_PIECE = re.compile(r"^[ A-Za-z0-9']*$")
_SPECIAL_SPLIT = re.compile('(' + '|'.join(re.escape(t) for t in SPECIAL_TOKENS) + ')')


def normalize(text: str) -> str:
    """Lowercase, strip accents, drop control characters (as the original's BertNormalizer)."""
    text = unicodedata.normalize('NFD', text.lower())
    return ''.join(c for c in text if unicodedata.category(c) not in ('Mn', 'Cc', 'Cf')
                   or c in '\t\n')


class Tokenizer:
    """Interface: ``encode(text) -> list[int]``, ``decode(ids) -> str``, ``vocab_size``."""
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def valid_token_mask(self) -> np.ndarray:
        """bool ``[vocab_size]``: TOKEN_IS_VALID for every id (computed once, then cached)."""
        if getattr(self, '_valid', None) is None:
            valid = np.zeros(self.vocab_size, bool)
            for i in range(NUM_SPECIAL + 1, self.vocab_size):
                piece = self.decode([i])
                valid[i] = bool(_VALID_PIECE.match(piece)) and piece.strip(' ') != ''
            self._valid = valid
        return self._valid

    def token_is_valid(self, ids) -> np.ndarray:
        """TOKEN_IS_VALID elementwise on an int array of ids."""
        ids = np.asarray(ids)
        return self.valid_token_mask()[np.clip(ids, 0, self.vocab_size - 1)] & (ids >= 0)


class BPETokenizer(Tokenizer):
    """The original lowercase byte-level BPE (``tokenizers`` JSON, vocab 32768)."""

    def __init__(self, path: str | os.PathLike):
        from tokenizers import Tokenizer as HFTokenizer
        self.path = os.fspath(path)
        self._tok = HFTokenizer.from_file(self.path)
        self.vocab_size = self._tok.get_vocab_size()
        self._valid = None
        for i, token in enumerate(SPECIAL_TOKENS[:8]):  # 8/9 are named unused1/2 in some copies
            if self._tok.token_to_id(token) != i:
                raise ValueError(f'{self.path}: special token {token} is not id {i}')

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def valid_token_mask(self) -> np.ndarray:
        """Spec §4 verbatim: id > 10, piece matches the regex, id not in the excluded set."""
        if self._valid is None:
            pieces = [self._tok.decode([i]) for i in range(self.vocab_size)]
            self._valid = np.array([i > NUM_SPECIAL and i not in BPE_EXCLUDED_IDS
                                    and bool(_VALID_PIECE.match(p))
                                    for i, p in enumerate(pieces)])
        return self._valid


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece model trained by :func:`train_sentencepiece` (special ids 0..9)."""

    def __init__(self, path: str | os.PathLike):
        import sentencepiece as spm
        self.path = os.fspath(path)
        self._sp = spm.SentencePieceProcessor(model_file=self.path)
        self.vocab_size = self._sp.get_piece_size()
        self._valid = None
        for i, token in enumerate(SPECIAL_TOKENS):
            if self._sp.id_to_piece(i) != token:
                raise ValueError(f'{self.path}: id {i} is {self._sp.id_to_piece(i)!r}, '
                                 f'expected {token}')

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for part in _SPECIAL_SPLIT.split(text):
            if part in SPECIAL_TOKENS:
                ids.append(SPECIAL_TOKENS.index(part))
            elif part:
                ids += self._sp.encode(normalize(part))
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Pieces joined with ``▁`` as a space, so a lone piece keeps its leading space (as the
        BPE's ``Ġ``); the leading space of the whole text is dropped."""
        pieces = []
        for i in (int(i) for i in ids):
            if i >= NUM_SPECIAL:
                pieces.append(self._sp.id_to_piece(i).replace('\u2581', ' '))
            elif not skip_special_tokens:
                pieces.append(SPECIAL_TOKENS[i])
        text = ''.join(pieces)
        return text[1:] if text.startswith(' ') and len(pieces) > 1 else text


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """``.json`` -> :class:`BPETokenizer`, ``.model`` -> :class:`SentencePieceTokenizer`."""
    path = os.fspath(path)
    if path.endswith('.json'):
        return BPETokenizer(path)
    if path.endswith('.model'):
        return SentencePieceTokenizer(path)
    raise ValueError(f'{path}: expected a tokenizers .json or a sentencepiece .model file')


def _lines(files: Sequence[str]) -> Iterator[str]:
    for name in files:
        with open(name, encoding='utf-8') as f:
            for line in f:
                line = normalize(line.strip())
                if line:
                    yield line


def train_sentencepiece(files: Sequence[str], prefix: str, vocab_size: int,
                        model_type: str = 'bpe', **kwargs) -> SentencePieceTokenizer:
    """Trains ``prefix.model`` on the lowercased lines of ``files``; special tokens get 0..9.

    PAD/START/END/UNK are sentencepiece's pad/bos/eos/unk pieces; the other six are
    user-defined symbols, which fill the free ids 3..7 and 9 in order. ``vocab_size`` is a
    soft limit (small corpora may yield fewer pieces). Extra ``kwargs`` go to the trainer.
    """
    import sentencepiece as spm
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    user_defined = [t for i, t in enumerate(SPECIAL_TOKENS) if i not in (PAD, START, END, UNK)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=_lines(files), model_prefix=prefix, vocab_size=vocab_size,
        model_type=model_type, pad_id=PAD, bos_id=START, eos_id=END, unk_id=UNK,
        pad_piece=SPECIAL_TOKENS[PAD], bos_piece=SPECIAL_TOKENS[START],
        eos_piece=SPECIAL_TOKENS[END], unk_piece=SPECIAL_TOKENS[UNK],
        user_defined_symbols=user_defined, hard_vocab_limit=False,
        character_coverage=1.0, minloglevel=2, **kwargs)
    return SentencePieceTokenizer(prefix + '.model')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--input', nargs='+', required=True, help='plain-text training files')
    parser.add_argument('--out', required=True, help='output prefix: writes PREFIX.model/.vocab')
    parser.add_argument('--vocab-size', type=int, default=8000)
    parser.add_argument('--model-type', default='bpe', choices=['bpe', 'unigram'])
    args = parser.parse_args(argv)
    tok = train_sentencepiece(args.input, args.out, args.vocab_size, args.model_type)
    example = "In this video I'll be<|MASK|>"
    print(f'wrote {args.out}.model: {tok.vocab_size} pieces; {example!r} -> {tok.encode(example)}')


if __name__ == '__main__':
    main()
