"""The one template and its named presets: rendered with a ChatML tokenizer (SmolLM2's, the chat template
Qwen2.5-Math uses too) they give the Qwen2.5-Math harness's strings exactly."""

import pytest
from stop_token_model import chatml_tokenizer

from evaluators.config import EvaluateConfig
from workbench.template import PRESETS, TemplateConfig, render_prompt

# yongliang-wu/DFT math_evaluation/utils.py PROMPT_TEMPLATES, with {input} = the problem
QWEN_BOXED = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
              "<|im_start|>user\n{input}\nPlease reason step by step, and put your final answer within "
              "\\boxed{{}}.<|im_end|>\n<|im_start|>assistant\n")
QWEN25_MATH_COT = ("<|im_start|>system\nPlease reason step by step, and put your final answer within "
                   "\\boxed{{}}.<|im_end|>\n<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def tok():
    return chatml_tokenizer()


def test_presets_render_the_harness_strings(tok):
    problem = "What is $1+1$?"
    assert render_prompt(tok, problem, PRESETS["qwen-boxed"]) == QWEN_BOXED.format(input=problem)
    assert render_prompt(tok, problem, PRESETS["qwen25-math-cot"]) == QWEN25_MATH_COT.format(input=problem)


def test_evaluate_template_overrides_the_run_template():
    run = TemplateConfig(system="train system", user_format="{problem}")
    assert EvaluateConfig().prompt_template(run) is run
    assert EvaluateConfig(template="qwen-boxed").prompt_template(run) == PRESETS["qwen-boxed"]
    assert EvaluateConfig(template={"system": "s"}).prompt_template(run).system == "s"
    with pytest.raises(ValueError, match="unknown template 'qwen'"):
        EvaluateConfig(template="qwen")


@pytest.mark.parametrize("table", ["table1", "table2"])
def test_paper_recipes_train_and_evaluate_with_the_authors_prompts(tok, table):
    """Training: Qwen2.5-Math's default chat prompt (verl SFTDataset); evaluation: qwen-boxed."""
    from workbench.recipe import load_recipe

    recipe = load_recipe(f"recipes/{table}-qwen2.5-math-1.5b.yaml")
    assert render_prompt(tok, "P", recipe.template) == QWEN25_MATH_COT.format(input="P")
    assert render_prompt(tok, "P", recipe.evaluate.prompt_template(recipe.template)) == QWEN_BOXED.format(input="P")
