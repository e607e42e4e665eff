"""Training: learning on real WV3 scenes, bit-exact resume, L-BAF branch alternation, LoRA adapters and merging."""
import time

import numpy as np
import pytest
import torch

from ssdiff_model.inference.pansharpener import network_from_checkpoint
from ssdiff_model.model.checkpoint import load_checkpoint
from ssdiff_model.model.diffusion import GaussianDiffusion
from ssdiff_model.model.lora import add_lora, has_lora, merge_lora
from ssdiff_model.model.network import SSDiffNet
from ssdiff_model.training.loop import (
    EMA,
    LBAFSchedule,
    TrainConfig,
    Trainer,
    evaluation_loss,
    patch_batches,
    train_step,
)

BANDS = 4


def small_net(bands: int = BANDS, seed: int = 0) -> SSDiffNet:
    torch.manual_seed(seed)
    return SSDiffNet(bands=bands, ratio=4, width=16, time_embed_dim=32, time_hidden_dim=64)


def synthetic_patches(n: int = 8, size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random but well-formed patches in [0, 1] (enough for the mechanics tested here)."""
    g = torch.Generator().manual_seed(seed)
    ms = torch.rand(n, BANDS, size // 4, size // 4, generator=g)
    lms = torch.nn.functional.interpolate(ms, scale_factor=4, mode="bicubic").clamp(0, 1)
    hrms = (lms + 0.05 * torch.randn(lms.shape, generator=g)).clamp(0, 1)
    return {"pan": hrms.mean(1, keepdim=True), "ms": ms, "lms": lms, "hrms": hrms}


def wald_patches(data_root, scene_id: str, size: int = 32) -> dict[str, torch.Tensor]:
    """32 x 32 reduced-resolution patches (Wald's protocol) of one real 8-band scene of ../shared/data, in [0, 1]."""
    from ssdiff_model.data.catalogue import iter_shared_sets
    from ssdiff_model.science.wald import cut_patches, reduced_resolution_example

    pair = next(s for s in iter_shared_sets(data_root, [scene_id.split(":")[0]]) if s.id == scene_id).load()
    pan, ms_lr, reference = reduced_resolution_example(pair)
    patches = cut_patches(pan, ms_lr, reference, size=size, stride=size, lms_method="interp23tap")
    arrays = {"pan": patches.pan[:, None], "ms": patches.ms_lr, "lms": patches.lms, "hrms": patches.reference}
    return {k: torch.from_numpy(np.clip(v / pair.full_scale, 0, 1)).float() for k, v in arrays.items()}


# ---- learning on real data ----------------------------------------------------------------------------

@pytest.fixture
def one_thread():
    """On a shared 2-core machine two busy-waiting intra-op threads run several times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_short_training_learns_real_detail_and_carries_it_to_another_scene(shared_data, one_thread):
    """400 steps on one real WorldView-3 scene (Munich, mixed cover): the network predicts its detail better than
    adding none, and on another scene it never saw (Munich, natural cover) its loss falls from the untrained
    network's to within reach of that scene's no-detail level. (Beating no detail on an unseen scene takes
    thousands of steps; the shipped checkpoints show that in bench/quality_table.py.)"""
    train = wald_patches(shared_data, "pairmax:W3_Muni_Mix")
    val = wald_patches(shared_data, "pairmax:W3_Muni_Nat")

    def batches(data):
        return [{k: v[i:i + 20] for k, v in data.items()} for i in range(0, len(data["pan"]), 20)]

    def no_detail(data):
        return (data["hrms"] - data["lms"]).abs().mean().item()

    net = small_net(bands=8)
    # Twice the paper's lr and a fast EMA so a short run on 2 shared CPU cores learns something measurable (the
    # release network starts from zero-initialised stems, so it needs more steps than a network with identity paths).
    config = TrainConfig(iterations=400, lr=2e-3, ema_decay=0.9, grad_clip=1.0, log_every=0)
    diffusion = GaussianDiffusion()
    before = evaluation_loss(net, diffusion, batches(val), seed=0)
    start = time.perf_counter()
    losses = []
    trainer = Trainer(net, config, device="cpu").fit(patch_batches(train, batch_size=8, seed=0),
                                                     on_step=lambda step, loss: losses.append(loss))
    elapsed = time.perf_counter() - start
    ema_net = small_net(bands=8)
    ema_net.load_state_dict(trainer.ema.weights(trainer.net))
    seen = evaluation_loss(ema_net, diffusion, batches(train), seed=0)
    unseen = evaluation_loss(ema_net, diffusion, batches(val), seed=0)
    print(f"training scene: no detail {no_detail(train):.4f}, trained {seen:.4f}; other scene: no detail "
          f"{no_detail(val):.4f}, untrained {before:.4f}, trained {unseen:.4f} after {config.iterations} steps in "
          f"{elapsed:.1f} s")
    assert len(losses) == config.iterations and trainer.step == config.iterations
    assert seen < 0.8 * no_detail(train)
    assert unseen < 0.1 * before and unseen < 2 * no_detail(val)


# ---- resume ---------------------------------------------------------------------------------------------

def test_resume_matches_an_uninterrupted_run(tmp_path):
    data = synthetic_patches()
    # L-BAF from iteration 4 so the resumed part also crosses into the alternating phase.
    config = dict(ema_decay=0.9, log_every=0, lbaf_start=4, lbaf_every=1)

    straight = Trainer(small_net(), TrainConfig(iterations=6, **config), device="cpu")
    straight.fit(patch_batches(data, batch_size=4, seed=1))

    path = tmp_path / "run.pt"
    Trainer(small_net(), TrainConfig(iterations=3, checkpoint_path=str(path), **config), device="cpu") \
        .fit(patch_batches(data, batch_size=4, seed=1))
    assert load_checkpoint(path).training["iterations"] == 3
    resumed = Trainer.resume(path, device="cpu", iterations=6)
    assert resumed.step == 3
    resumed.fit(patch_batches(data, batch_size=4, seed=1, start_step=resumed.step))

    assert resumed.step == 6
    for (name, a), b in zip(straight.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), name
    for name, value in straight.ema.shadow.items():
        assert torch.equal(value, resumed.ema.shadow[name]), name
    final = load_checkpoint(path)  # the resumed run kept the run's checkpoint path and saved at its end
    assert final.training["iterations"] == 6 and final.training["lbaf_phase"] == "spectral"


# ---- L-BAF ------------------------------------------------------------------------------------------------

def test_lbaf_schedule_alternates_after_its_start():
    schedule = LBAFSchedule(start=10, every=3, first="spectral")
    phases = [schedule.phase(step) for step in range(8, 18)]
    assert phases == [None, None] + ["spectral"] * 3 + ["spatial"] * 3 + ["spectral"] * 2
    with pytest.raises(ValueError, match="every"):
        LBAFSchedule(start=0, every=0)


def test_lbaf_trains_exactly_one_branch_per_phase():
    net = small_net()
    data = synthetic_patches()
    config = TrainConfig(iterations=5, lbaf_start=1, lbaf_every=2, lbaf_lr=1e-4, log_every=0)
    trainer = Trainer(net, config, device="cpu")
    branches = {name: net.branch_parameters(name) for name in ("spatial", "spectral", "shared")}
    snapshot = {name: [p.detach().clone() for p in params] for name, params in branches.items()}
    seen = []

    def check(step, loss):
        phase = trainer.lbaf.phase(step - 1)
        seen.append(phase)
        for name, params in branches.items():
            trained = phase is None or name == phase
            got_grad = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params]
            moved = [not torch.equal(p, old) for p, old in zip(params, snapshot[name])]
            if trained:
                assert any(got_grad) and any(moved), (step, name)
            else:
                assert not any(p.grad is not None for p in params) and not any(moved), (step, name)
            snapshot[name] = [p.detach().clone() for p in params]
        expected_lr = 1e-4 if phase else 1e-3
        assert all(group["lr"] == expected_lr for group in trainer.optimizer.param_groups)

    trainer.fit(patch_batches(data, batch_size=4), on_step=check)
    assert seen == [None, "spatial", "spatial", "spectral", "spectral"]


def test_branches_partition_the_parameters():
    net = small_net()
    ids = [id(p) for name in ("spatial", "spectral", "shared") for p in net.branch_parameters(name)]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in net.parameters()}


# ---- LoRA -------------------------------------------------------------------------------------------------

def test_merged_lora_matches_the_adapted_model():
    net = small_net().eval()
    adapters = add_lora(net, rank=2, alpha=4.0)
    assert {id(p) for p in net.parameters() if p.requires_grad} == {id(p) for p in adapters}
    for p in adapters:  # B starts at zero; give every adapter a real effect
        torch.nn.init.normal_(p, std=0.2)
    inputs = synthetic_patches(n=2)
    args = (torch.randn(2, BANDS, 16, 16), torch.tensor([10, 600]), inputs["pan"], inputs["lms"], inputs["ms"])
    with torch.no_grad():
        adapted = net(*args)
        base = small_net().eval()(*args)
    assert (adapted - base).abs().max() > 1e-3  # the adapters change the function
    merge_lora(net)
    assert not has_lora(net) and net.state_dict().keys() == small_net().state_dict().keys()
    assert all(type(block.proj_a) is torch.nn.Linear for block in net.spectral_blocks)
    with torch.no_grad():
        torch.testing.assert_close(net(*args), adapted, rtol=0, atol=1e-5)


def test_lora_training_moves_only_the_adapters_and_loads_merged(tmp_path):
    net = small_net()
    original = {k: v.clone() for k, v in net.state_dict().items()}
    path = tmp_path / "lora.pt"
    trainer = Trainer(net, TrainConfig(iterations=2, lora_rank=2, checkpoint_path=str(path), log_every=0),
                      device="cpu").fit(patch_batches(synthetic_patches(), batch_size=4))
    state = trainer.net.state_dict()
    for key, value in original.items():
        stored = state.get(key, state.get(key.replace(".weight", ".parametrizations.weight.original")))
        assert torch.equal(stored, value), key
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in state.items() if k.endswith("lora_b"))
    rebuilt = network_from_checkpoint(load_checkpoint(path), ema=False)
    assert not has_lora(rebuilt)
    inputs = synthetic_patches(n=2)
    args = (torch.randn(2, BANDS, 16, 16), torch.tensor([10, 600]), inputs["pan"], inputs["lms"], inputs["ms"])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(*args), trainer.net.eval()(*args), rtol=0, atol=1e-5)


# ---- pieces used by the distributed job ---------------------------------------------------------------

def test_ema_and_train_step():
    net = small_net()
    ema = EMA(net, decay=0.5)
    start = {k: v.clone() for k, v in ema.shadow.items()}
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0)
    batch = {k: v[:4] for k, v in synthetic_patches().items()}
    loss = train_step(net, GaussianDiffusion(), optimizer, batch, torch.Generator().manual_seed(0))
    assert np.isfinite(loss) and loss > 0
    ema.update(net)
    current = net.state_dict()
    for name, value in ema.shadow.items():  # halfway between the old and the new weights
        torch.testing.assert_close(value, 0.5 * (start[name] + current[name]))
    with pytest.raises(ValueError, match="decay"):
        EMA(net, decay=1.0)
    # warm-up: the first updates follow the weights closely, late ones use the configured decay
    warm = EMA(net, decay=0.9999)
    assert warm.decay_at(0) == pytest.approx(0.1) and warm.decay_at(1000) == pytest.approx(1001 / 1010)
    assert warm.decay_at(10**6) == 0.9999 and warm.decay_at(None) == 0.9999


def test_a_fine_tune_goes_on_averaging_at_its_base_decay():
    """Fine-tuning starts from the base's EMA weights; warming the EMA up again would make the fine-tune's model an
    average of its last few dozen steps only (it cost a 300-iteration L-BAF run on the 8-band family 0.07 in SAM)."""
    data = synthetic_patches()
    base = small_net()
    start = {k: v.clone() for k, v in base.state_dict().items()}
    config = TrainConfig(iterations=1, ema_warmup_from=2400, log_every=0)
    trainer = Trainer(base, config, device="cpu").fit(patch_batches(data, batch_size=4, seed=0))
    weight = 1 - trainer.ema.decay_at(2400)   # 9 / 2410, where a fresh warm-up would take 0.9 of the new weights
    for name, value in trainer.ema.shadow.items():
        torch.testing.assert_close(value, start[name].lerp(trainer.net.state_dict()[name], weight))
    assert trainer.checkpoint().training["ema_iterations"] == 2401


def test_dihedral_augmentation_turns_every_array_of_an_example_alike():
    """Each augmented example is one of the 8 turns / mirrors of the example drawn at that step, the same one for
    its PAN, MS, lms and reference; the draws depend only on (seed, step), so a resumed run sees the same."""
    from ssdiff_model.training.loop import dihedral

    data = synthetic_patches(n=6)
    image = data["hrms"][0]
    assert len({dihedral(image, k).numpy().tobytes() for k in range(8)}) == 8   # 8 distinct elements
    plain = patch_batches(data, 4, seed=3)
    turned = patch_batches(data, 4, seed=3, augmentation="dihedral")
    used = set()
    for _ in range(12):
        before, after = next(plain), next(turned)
        for i in range(4):
            ks = [k for k in range(8) if torch.equal(dihedral(before["hrms"][i], k), after["hrms"][i])]
            assert len(ks) == 1
            for name in ("pan", "ms", "lms"):
                assert torch.equal(dihedral(before[name][i], ks[0]), after[name][i]), name
            used.add(ks[0])
    assert used == set(range(8))
    again = patch_batches(data, 4, seed=3, start_step=11, augmentation="dihedral")
    assert all(torch.equal(a, b) for a, b in zip(next(again).values(), after.values()))
    with pytest.raises(ValueError, match="unknown augmentation"):
        next(patch_batches(data, 4, augmentation="mixup"))


def test_band_gains_scale_each_band_of_an_example_alike():
    """One gain per example and band, within [1/R, R], applied to its MS, lms and reference; a raw PAN stays as it
    is, an equalized one follows the MS intensity."""
    data = {k: v * 0.5 for k, v in synthetic_patches(n=6).items()}   # below 1/R.. R so nothing clips
    plain = next(patch_batches(data, 4, seed=1))
    for equalized in (False, True):
        gained = next(patch_batches(data, 4, seed=1, band_gains=1.5, pan_equalization=equalized))
        gains = gained["lms"].mean(dim=(2, 3)) / plain["lms"].mean(dim=(2, 3))
        assert gains.shape == (4, BANDS) and (gains >= 1 / 1.5 - 1e-6).all() and (gains <= 1.5 + 1e-6).all()
        assert gains.std() > 0.05   # bands and examples get gains of their own
        for name in ("ms", "hrms"):
            np.testing.assert_allclose(gained[name], plain[name] * gains[:, :, None, None], rtol=1e-5, atol=1e-7)
        intensity = (plain["lms"].mean(dim=(2, 3)) * gains).sum(1) / plain["lms"].mean(dim=(2, 3)).sum(1)
        expected = plain["pan"] * intensity[:, None, None, None] if equalized else plain["pan"]
        np.testing.assert_allclose(gained["pan"], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="band gain spread"):
        next(patch_batches(data, 4, band_gains=0.5))


def test_band_equalization_needs_the_equalized_pan_and_excludes_band_gains():
    assert TrainConfig(iterations=1, pan_equalization=True, band_equalization=True).band_equalization
    with pytest.raises(ValueError, match="band equalization is relative to the equalized PAN"):
        TrainConfig(iterations=1, band_equalization=True)
    with pytest.raises(ValueError, match="band gains and band equalization exclude each other"):
        TrainConfig(iterations=1, pan_equalization=True, band_equalization=True, band_gains=1.5)
