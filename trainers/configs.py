"""Configuration dataclasses of the GMAI-VL trainers, the way TRL documents its own.

A recipe is one flat YAML mapping read by TRL's `TrlParser` into three dataclasses, as TRL's
`trl sft` / `trl grpo` scripts do: the script arguments (`GMAIVLScriptArguments`: which stage,
which trainer), the training config (`GMAIVLSFTConfig` or `GMAIVLGRPOConfig`, TRL's `SFTConfig` /
`GRPOConfig` plus the fields below) and the model arguments (`GMAIVLModelConfig`, TRL's
`ModelConfig` plus how to compose a new model). The trainers read everything from `self.args`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import yaml
from trl import GRPOConfig, ModelConfig, ScriptArguments, SFTConfig

logger = logging.getLogger(__name__)

#: The three trainable parts of a vision-language model (see `freezing.part_of_parameter`).
MODULE_NAMES: tuple[str, ...] = ("vision", "projector", "llm")
TRAINER_KINDS: tuple[str, ...] = ("sft", "grpo")


@dataclass
class GMAIVLScriptArguments(ScriptArguments):
    """
    Script arguments of `gmaivl train`: TRL's `ScriptArguments` plus what names the stage.

    Parameters:
        stage (`str`, *optional*, defaults to `"stage"`):
            Stage name, e.g. `shallow_alignment`; names the stage's folder in a chain.
        trainer (`str`, *optional*, defaults to `"sft"`):
            Trainer of the stage: `"sft"` (`GMAIVLSFTConfig`) or `"grpo"` (`GMAIVLGRPOConfig`).
        recipe_family (`str`, *optional*, defaults to `"gmaivl"`):
            Which paper's recipe this is: `"gmaivl"` or `"lingshu"` (informative).

    TRL's `dataset_name` / `dataset_config` / `dataset_train_split` load a single dataset when the
    recipe lists no `datasets` mixture.
    """

    stage: str = field(default="stage", metadata={"help": "Stage name, e.g. shallow_alignment."})
    trainer: str = field(default="sft", metadata={"help": "Trainer that runs the stage: sft or grpo."})
    recipe_family: str = field(default="gmaivl", metadata={"help": "Recipe family: gmaivl or lingshu."})

    def __post_init__(self) -> None:
        if self.trainer not in TRAINER_KINDS:
            raise ValueError(f"recipe key `trainer` must be one of {TRAINER_KINDS}, got {self.trainer!r}")


@dataclass
class GMAIVLModelConfig(ModelConfig):
    """
    Model arguments: TRL's `ModelConfig` plus how to compose a new model.

    Parameters:
        model_name_or_path (`str`, *optional*):
            A checkpoint folder or Hub id of a GMAI-VL, LLaVA (`LlavaForConditionalGeneration`) or
            Qwen2-VL / Qwen2.5-VL model; or a tiny random model for tests: `tiny[:SEED]` (GMAI-VL),
            `tiny-llava[:SEED]`, `tiny-qwen2-vl[:SEED]`, `tiny-qwen2.5-vl[:SEED]`. Empty in a
            chain's later stages: the previous stage's output folder.
        vision_model_name_or_path (`str`, *optional*):
            With `llm_model_name_or_path`, and no `model_name_or_path`: compose a new GMAI-VL from a
            vision encoder and an LLM (stage I from scratch).
        llm_model_name_or_path (`str`, *optional*):
            The LLM to compose with.
        image_size (`int`, *optional*):
            Image side in pixels of the tiny models (336 in the GMAI-VL paper's recipe).
        attn_implementation (`str`, *optional*, defaults to `"sdpa"`):
            Attention of the language model: `sdpa`, `eager` or `gmaivl_packed` (the Triton varlen
            kernel). TRL's default is `None`; packed rows need one that keeps samples apart.
    """

    vision_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "With llm_model_name_or_path: compose a new model (stage I from scratch)."},
    )
    llm_model_name_or_path: str | None = field(default=None, metadata={"help": "LLM to compose with."})
    image_size: int | None = field(
        default=None, metadata={"help": "Image side length in pixels (336 for the paper's recipe)."}
    )
    attn_implementation: str | None = field(
        default="sdpa", metadata={"help": "Attention of the language model: sdpa, eager or gmaivl_packed."}
    )


@dataclass
class StageFields:
    """Fields both trainers share (documented in `GMAIVLSFTConfig`)."""

    trainable_modules: list[str] = field(
        default_factory=lambda: list(MODULE_NAMES),
        metadata={"help": "Parts that train, among vision, projector, llm; the others are frozen."},
    )
    module_learning_rates: dict[str, float] | None = field(
        default=None,
        metadata={"help": "Per-part learning rates, e.g. {vision: 2e-6, projector: 1e-5, llm: 1e-5}."},
    )
    datasets: list[dict[str, Any]] = field(
        default_factory=list,
        metadata={
            "help": "Data mixture: each source {path, name?, data_files?, split?, ratio, source?}. `ratio` is the "
            "share of that source used (1.0 = all rows, 0.05 = 5%, above 1 repeats rows)."
        },
    )
    mixture_seed: int = field(
        default=0, metadata={"help": "Seed of the ratio sub-sampling and of the shuffle."}
    )
    min_response_chars: int = field(
        default=0,
        metadata={"help": "Drop rows whose assistant text is shorter than this (stage III filter)."},
    )
    max_quality_score: float | None = field(
        default=None, metadata={"help": "Drop rows whose judge score is above this (1 best .. 5 worst)."}
    )
    min_quality_score: float | None = field(
        default=None,
        metadata={"help": "Drop rows whose judge score is below this (higher-is-better scales)."},
    )
    quality_score_column: str = field(
        default="quality_score", metadata={"help": "Column with the judge score."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Cap on the mixed rows (debugging)."}
    )

    def _check_stage_fields(self) -> None:
        if isinstance(self.trainable_modules, str):
            self.trainable_modules = [m.strip() for m in self.trainable_modules.split(",") if m.strip()]
        unknown = set(self.trainable_modules) - set(MODULE_NAMES)
        if unknown:
            raise ValueError(
                f"recipe key `trainable_modules` has unknown parts {sorted(unknown)}; use {MODULE_NAMES}"
            )
        if isinstance(self.module_learning_rates, str):
            self.module_learning_rates = yaml.safe_load(self.module_learning_rates)
        if self.module_learning_rates is not None:
            unknown = set(self.module_learning_rates) - set(MODULE_NAMES)
            if unknown:
                raise ValueError(
                    f"recipe key `module_learning_rates` has unknown parts {sorted(unknown)}; use {MODULE_NAMES}"
                )
            self.module_learning_rates = {k: float(v) for k, v in self.module_learning_rates.items()}
        if isinstance(self.datasets, str):
            self.datasets = yaml.safe_load(self.datasets)
        for i, source in enumerate(self.datasets or []):
            if not isinstance(source, dict) or "path" not in source:
                raise ValueError(
                    f"recipe `datasets[{i}]` must be a mapping with at least `path`, got {source!r}"
                )
            ratio = float(source.get("ratio", 1.0))
            if ratio < 0:
                raise ValueError(
                    f"recipe `datasets[{i}]` ({source['path']}): ratio must be >= 0, got {ratio}"
                )


@dataclass
class GMAIVLSFTConfig(SFTConfig, StageFields):
    r"""
    Configuration of a GMAI-VL SFT stage: TRL's [`SFTConfig`] plus the fields below.

    Parameters:
        trainable_modules (`list[str]`, *optional*, defaults to `["vision", "projector", "llm"]`):
            Parts that train; the others are frozen (`requires_grad=False`) before the optimizer is
            built. Stage I of GMAI-VL trains `[projector]`, stage II `[vision, projector]`.
        module_learning_rates (`dict[str, float]`, *optional*):
            A learning rate per part, e.g. `{vision: 2e-6, projector: 1e-5, llm: 1e-5}` (Lingshu).
            Parts left out use `learning_rate`. One AdamW group per part (and per decay / no decay).
        vlm_packing (`bool`, *optional*, defaults to `False`):
            Pack whole samples (their image tokens stay with their text) into rows of
            `packing_max_length` tokens by best-fit-decreasing, with position ids restarting per
            sample. TRL's own `packing` refuses vision data; `packing: true` in a recipe means this.
        packing_max_length (`int`, *optional*):
            Token length of one packed row; `None` means `max_length`.
        datasets (`list[dict]`, *optional*, defaults to `[]`):
            The data mixture: sources `{path, name?, data_files?, split?, ratio, source?}`. `path` is
            a `save_to_disk` folder, a data file, a dataset folder in the Hub layout or a Hub id;
            `ratio` is the share of the source used in this stage (Table 10 of the GMAI-VL paper).
        mixture_seed (`int`, *optional*, defaults to `0`):
            Seed of the ratio sub-sampling and of the shuffle of the mixture.
        min_response_chars (`int`, *optional*, defaults to `0`):
            Drop rows whose assistant text is shorter (GMAI-VL stage III's "too short" filter).
        max_quality_score / min_quality_score (`float`, *optional*):
            Keep rows whose judge score (column `quality_score_column`) is within these bounds; the
            GMAI-VL judge scores 1 (best) to 5, 3 or better is satisfactory. Unscored rows stay.
        quality_score_column (`str`, *optional*, defaults to `"quality_score"`):
            Column holding the judge score.
        max_train_samples (`int`, *optional*):
            Cap on the number of mixed rows (debugging).
    """

    vlm_packing: bool = field(
        default=False,
        metadata={"help": "Pack whole samples into rows of `packing_max_length` (best-fit-decreasing)."},
    )
    packing_max_length: int | None = field(
        default=None, metadata={"help": "Token length of one packed row (default: max_length)."}
    )

    def __post_init__(self) -> None:
        if self.packing:
            # TRL's packing rejects vision datasets ("Packing is not supported for vision datasets"); on a
            # vision-language model the packing that works is ours.
            logger.warning(
                "`packing: true` on a vision-language recipe: using `vlm_packing` instead of TRL's packing"
            )
            self.packing, self.vlm_packing = False, True
        super().__post_init__()
        self._check_stage_fields()
        if self.packing_max_length is None:
            self.packing_max_length = self.max_length
        if self.vlm_packing and (self.packing_max_length is None or self.packing_max_length < 2):
            raise ValueError(
                "`vlm_packing` needs `packing_max_length` (or `max_length`) of at least 2 tokens"
            )
        # The collator reads the raw rows (ids name bad rows): TRL must keep every column and skip its
        # own preparation, which would tokenise the text without the images.
        self.remove_unused_columns = False
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}


@dataclass
class GMAIVLGRPOConfig(GRPOConfig, StageFields):
    r"""
    Configuration of a GMAI-VL GRPO stage: TRL's [`GRPOConfig`] plus the fields below and those of
    [`GMAIVLSFTConfig`] for trainable parts, per-part learning rates and the data mixture.

    Parameters:
        reward_funcs (`list[str]`, *optional*, defaults to `["format", "accuracy"]`):
            Reward functions: names in `gmaivl.trainers.rewards.REWARD_FUNCTIONS` (`format`,
            `accuracy`) or dotted import paths, as TRL's `--reward_funcs` takes them. Weighted by
            TRL's `reward_weights`.
        grpo_open_from_mcq (`bool`, *optional*, defaults to `True`):
            Turn multiple-choice questions whose right option is a word or short phrase into open
            questions (Lingshu, Sec. 3.1.4).
        grpo_yes_no_ratio (`float`, *optional*, defaults to `0.05`):
            Target share of yes/no questions after down-sampling.

    Rows come as the dataset builders publish them (`images`, `prompt`, `question`, `options`,
    `answer`, `question_type`), or as bare `question` / `answer` (+ `options`) rows.
    """

    reward_funcs: list[str] = field(
        default_factory=lambda: ["format", "accuracy"],
        metadata={"help": "Reward functions: names (format, accuracy) or dotted import paths."},
    )
    grpo_yes_no_ratio: float = field(
        default=0.05, metadata={"help": "GRPO data: target share of yes/no questions after down-sampling."}
    )
    grpo_open_from_mcq: bool = field(
        default=True, metadata={"help": "GRPO data: turn MCQs whose options are words into open questions."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_stage_fields()
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(
                f"reward_weights {self.reward_weights} and reward_funcs {self.reward_funcs} differ in length"
            )
        if not 0 <= self.grpo_yes_no_ratio < 1:
            raise ValueError(f"grpo_yes_no_ratio must be in [0, 1), got {self.grpo_yes_no_ratio}")


def config_class(trainer: str) -> type:
    """The training config dataclass of a trainer kind."""
    return {"sft": GMAIVLSFTConfig, "grpo": GMAIVLGRPOConfig}[trainer]
