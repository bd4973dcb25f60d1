"""The one prompt template: used for sampling, by every trainer and by the evaluator.

It lives in the recipe (`template:` section) so that no code path renders prompts its own way. The one
exception a recipe may ask for: `evaluate.template` gives the evaluator its own (the paper's authors train
with one prompt and evaluate with another, see PRESETS).
"""

from pydantic import Field

from workbench.config_base import Section

QWEN_MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


class TemplateConfig(Section):
    instruction: str = Field(
        QWEN_MATH_INSTRUCTION,
        description="Instruction telling the model to put its final answer in \\boxed{}.",
    )
    system: str | None = Field(None, description="System message, when the chat template is used.")
    user_format: str = Field(
        "{problem}\n{instruction}",
        description="How the user turn is built from the problem and the instruction.",
    )
    use_chat_template: bool = Field(
        True,
        description="Wrap the user turn with the tokenizer's chat template when it has one; "
        "otherwise (or when false) the prompt is `plain_format`.",
    )
    plain_format: str = Field(
        "{user}\n",
        description="Prompt text used without a chat template; `{user}` is the rendered user turn.",
    )


def render_prompt(tokenizer, problem: str, cfg: TemplateConfig) -> str:
    """Return the exact prompt string a model sees for `problem` (generation starts right after it)."""
    user = cfg.user_format.format(problem=problem, instruction=cfg.instruction)
    if cfg.use_chat_template and getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [
            {"role": "user", "content": user}
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return cfg.plain_format.format(user=user)


# Named templates a recipe may give by name (`evaluate: {template: qwen-boxed}`), from the Qwen2.5-Math
# evaluation harness as the paper's authors ship it (yongliang-wu/DFT, math_evaluation/utils.py,
# PROMPT_TEMPLATES; their README evaluates with PROMPT_TYPE="qwen-boxed"). Rendered with a ChatML chat
# template they give exactly the harness's strings.
PRESETS: dict[str, TemplateConfig] = {
    # system "You are a helpful assistant.", user "{problem}\nPlease reason step by step, and put your
    # final answer within \boxed{}.": the authors' evaluation prompt
    "qwen-boxed": TemplateConfig(system="You are a helpful assistant.", user_format="{problem}\n{instruction}"),
    # the instruction as the system prompt, the raw problem as the user turn (Qwen2.5-Math's chat template
    # default; what the authors' SFT/DFT training renders, verl SFTDataset on extra_info.question)
    "qwen25-math-cot": TemplateConfig(system=QWEN_MATH_INSTRUCTION, user_format="{problem}"),
}


def template_preset(value):
    """A template given by preset name becomes its TemplateConfig; anything else is returned unchanged."""
    if isinstance(value, str):
        if value not in PRESETS:
            raise ValueError(f"unknown template {value!r} (known: {', '.join(PRESETS)}; or a mapping of fields)")
        return PRESETS[value]
    return value
