"""TRL's `examples/scripts/grpo_vlm.py` with qwengrpo swapped in: the imports are the one change.

    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/trl_grpo_vlm.py \
        --model_name_or_path Qwen/Qwen2.5-VL-3B-Instruct \
        --dataset_name lmms-lab/multimodal-open-r1-8k-verified \
        --output_dir grpo-Qwen2.5-VL-3B-Instruct \
        --learning_rate 1e-5 --dtype bfloat16 --max_completion_length 1024 \
        --use_peft --lora_target_modules q_proj v_proj --log_completions

Every flag of TRL's `GRPOConfig`, `ModelConfig` and `ScriptArguments` means what it means in TRL, and qwengrpo's own
(`--video_max_frames`, `--freeze_vision_tower`, `--on_error`, ...) sit beside them. The data set is any with an
`image` column (PIL images or paths), a `problem` and a `solution`, as TRL's example reads; the image is shown
before the question, as TRL places it.
"""

from __future__ import annotations

from datasets import load_dataset
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config, get_quantization_config
from trl.rewards import accuracy_reward, think_format_reward

# The one change from TRL's script: `from trl import GRPOConfig, GRPOTrainer` becomes
from qwengrpo import QwenGRPOConfig as GRPOConfig
from qwengrpo import QwenGRPOTrainer as GRPOTrainer

SYSTEM_PROMPT = (
    "A conversation between user and assistant. The user asks a question, and the assistant solves it. The "
    "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think></think> tags, i.e., <think>\nThis is my "
    "reasoning.\n</think>\nThis is my answer."
)


def make_conversation(example: dict) -> dict:
    return {"prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": example["problem"]}]}


def main(argv: list[str] | None = None) -> GRPOTrainer:
    parser = TrlParser((ScriptArguments, GRPOConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }

    dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config)
    train_dataset = dataset[script_args.dataset_train_split].map(make_conversation)
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_dataset = dataset[script_args.dataset_test_split].map(make_conversation)

    trainer = GRPOTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        reward_funcs=[think_format_reward, accuracy_reward],
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    return trainer


if __name__ == "__main__":
    main()
