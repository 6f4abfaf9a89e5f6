"""A small byte-level BPE tokenizer trained in memory, for tests that need no network."""

from __future__ import annotations

from functools import cache

CORPUS = [
    "Q: What is the capital of France?\nA: Paris",
    "Athens is to Greece as Baghdad is to Iraq",
    "The quick brown fox jumps over the lazy dog.",
    "Which planet is known as the red planet? Mars, Venus, Jupiter or Saturn.",
    "the cat sat on the mat and the dog sat on the log",
    "Lima Quito Bogota Santiago Caracas Montevideo Asuncion La Paz Sucre",
    "élan café naïve façade — ünïcödé 東京 Москва",
]


@cache
def tiny_tokenizer(vocab_size: int = 320):
    """A PreTrainedTokenizerFast with BOS <s> (id 1), EOS </s> (id 2), PAD <pad> (id 0).

    Like the Llama/SmolLM2 tokenizers it adds no special tokens on encode, so the harness-style
    split of context and continuation applies unchanged.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
