"""The GPU memory plan: hand-computed terms for the recipe (GPT-J-6B on ml.p4d.24xlarge), refusal of plans that
cannot fit, and the PPO step refusing one before it loads any weights."""


import pytest
from transformers import AutoConfig

from rlhf_assets.compute.memory_plan import GIB, MemoryPlanError, ModelShape, Precision, ppo_plan
from rlhf_assets.compute.preset_memory import preset_plans
from rlhf_assets.presets import GPTJ_6B

pytestmark = pytest.mark.unit

H, V, LAYERS = 4096, 50400, 28  # GPT-J-6B: AutoConfig.for_model("gptj") is its config
BLOCK = 4 * H * H + (H * 4 * H + 4 * H) + (4 * H * H + H) + 2 * H  # q,k,v,out; fc_in; fc_out; ln_1
HEAD = 2 * H + H * V + V  # ln_f; lm_head with bias


def gptj_plans():
    config = AutoConfig.for_model("gptj")
    config.num_labels = 1
    return preset_plans("gptj_6b", config)


def term(plan, prefix: str) -> float:
    return next(t.bytes for t in plan.terms if t.name.startswith(prefix))


def test_gptj_ppo_plan_on_p4d_by_hand() -> None:
    _, ppo = gptj_plans()
    assert ppo.gpu_gib == 39.4 and "7 training ranks" in ppo.setup and "ZeRO-2 bf16" in ppo.setup
    parameters = LAYERS * BLOCK + HEAD + V * H  # + token embeddings
    assert term(ppo, "weights (16-bit)") == 2 * parameters
    assert term(ppo, "reference: hydra branch") == 2 * (2 * BLOCK + HEAD)  # ≈ 0.6 B parameters, not 6.05 B
    value_head = 2 * H * H + 4 * H + 1
    trainable = 2 * BLOCK + HEAD + value_head
    assert term(ppo, "fp32 master weights + Adam moments") == pytest.approx(12 * trainable / 7)
    assert term(ppo, "KV cache") == 2 * LAYERS * 16 * 1024 * H * 2 == 7 * GIB
    assert [t.name for t in ppo.reward_gpu_terms][0] == "reward model (fp16)"
    assert ppo.rank_gib < 39.4 - 1, "the recipe fits a p4d"
    assert ppo.peak_phase == "evaluation" and ppo.phase_gib()["generation"] < ppo.rank_gib
    assert term(ppo, "SFT model for the final comparison") == 2 * parameters
    full = ppo_plan(ModelShape.from_config(AutoConfig.for_model("gptj")),
                    GPTJ_6B.ppo.config.model_copy(update={"hydra_reference": False}),
                    Precision(2, "bf16"), 7, None, reward_batch_size=8, reward_on_own_gpu=True, gpu=(40.0, "p4d"))
    assert term(full, "reference: full frozen copy") == 2 * parameters
    saved = 2 * (parameters - 2 * BLOCK - HEAD) / GIB  # ≈ 10.1 GiB in every training phase
    for phase in ("generation", "rollout forward", "training"):
        assert full.phase_gib()[phase] - ppo.phase_gib()[phase] == pytest.approx(saved)


def test_sft_plan_counts_every_parameter_as_trainable() -> None:
    sft, _ = gptj_plans()
    parameters = LAYERS * BLOCK + HEAD + V * H
    assert term(sft, "fp32 master weights + Adam moments (/8 ranks)") == 12 * parameters / 8
    assert term(sft, "activations of 28 blocks (2 × 1024)") == 17 * 28 * 2 * 1024 * H * 2


def test_a_plan_over_the_gpu_is_refused_naming_its_largest_terms_unless_forced() -> None:
    shape = ModelShape.from_config(AutoConfig.for_model("gptj"))
    config = GPTJ_6B.ppo.config.model_copy(update={"chunk_size": 64})
    plan = ppo_plan(shape, config, Precision(2, "bf16"), 7, None, reward_batch_size=8, reward_on_own_gpu=True,
                    gpu=(39.4, "ml.p4d.24xlarge, 39.4 GiB"))
    refused = (r"each training rank needs 50\.5 GiB \(evaluation\) .* over the 39\.4 GiB .*largest terms: "
               r"evaluation KV cache \(64 × 1024 tokens\) 28\.0 GiB, weights \(16-bit\) 11\.3 GiB, SFT model")
    with pytest.raises(MemoryPlanError, match=refused):
        plan.check(force=False, log=print)
    logged: list[str] = []
    plan.check(force=True, log=logged.append)
    assert logged[0].startswith("WARNING (force_memory_plan)")
    fits: list[str] = []
    gptj_plans()[1].check(force=False, log=fits.append)
    assert fits[0].startswith("memory plan fits")
