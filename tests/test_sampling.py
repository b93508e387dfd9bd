"""The samplers against diffusers' schedulers, step by step (fixture: tests/fixtures/make_sampling_fixtures.py).

The stand-in network model(x, t) = 0.3 x + sin(t / 100) * PATTERN makes every step depend on the
previous one, so a wrong timestep, alpha or update anywhere shows in all later latents. Our samplers
are pure functions, so the latents after each step are the inputs of the next model call.

Tolerance: 1e-5 relative plus 1e-5 absolute, on latents of up to ~30 (a one-step sample is x_0 itself,
x_t magnified by 1 / sqrt(a_999) ~ 15). Our schedule and step coefficients are float64 Python floats,
diffusers' are float32 tensors (alphas_cumprod, and DPM-Solver's sigmas, are rounded to float32 before
use), so the two differ by float32 rounding accumulated over the steps: measured at most 1.5e-5
absolute (dpm_1_epsilon, latents ~30), 7e-7 of the largest latent, i.e. 21% of the tolerance; UniPC's
largest is the same one-step case (1.5e-5), its 20-step epsilon run 7.6e-6 on latents ~15.
Reading alphas_cumprod one timestep off gives errors of 2e-3 to 2e-1, over 100 times the tolerance;
a wrong second UniC weight (b_2 = b_1) 0.15.
"""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from salient_outpaint.config import ScheduleConfig
from salient_outpaint.options import OptionError, SamplingOptions
from salient_outpaint.sampling import SAMPLERS
from salient_outpaint.sampling.schedule import (add_noise, alphas_cumprod, leading_timesteps, linspace_timesteps,
                                                part_way_timesteps,
                                                predicted_clean_and_noise, velocity)

FIXTURE = load_file(Path(__file__).parent / "fixtures" / "sampling.safetensors")
TOLERANCE = dict(rtol=1e-5, atol=1e-5)
SAMPLER_OF = {"ddim": "ddim", "dpm": "dpm++2m", "unipc": "unipc"}  # the fixture's names -> ours
CASES = {  # the fixture's cases: name -> (sampler, steps, prediction type, eta)
    "ddim_10_epsilon": ("ddim", 10, "epsilon", 0.0),
    "ddim_20_v": ("ddim", 20, "v_prediction", 0.0),
    "ddim_7_v": ("ddim", 7, "v_prediction", 0.0),
    "ddim_1_epsilon": ("ddim", 1, "epsilon", 0.0),
    "ddim_10_epsilon_eta1": ("ddim", 10, "epsilon", 1.0),
    "ddim_10_v_eta1": ("ddim", 10, "v_prediction", 1.0),
    "dpm_20_epsilon": ("dpm", 20, "epsilon", 0.0),
    "dpm_25_epsilon": ("dpm", 25, "epsilon", 0.0),
    "dpm_10_v": ("dpm", 10, "v_prediction", 0.0),
    "dpm_7_epsilon": ("dpm", 7, "epsilon", 0.0),
    "dpm_2_v": ("dpm", 2, "v_prediction", 0.0),
    "dpm_1_epsilon": ("dpm", 1, "epsilon", 0.0),
    "unipc_20_epsilon": ("unipc", 20, "epsilon", 0.0),
    "unipc_20_v": ("unipc", 20, "v_prediction", 0.0),
    "unipc_7_epsilon": ("unipc", 7, "epsilon", 0.0),
    "unipc_4_v": ("unipc", 4, "v_prediction", 0.0),
    "unipc_2_epsilon": ("unipc", 2, "epsilon", 0.0),
    "unipc_1_epsilon": ("unipc", 1, "epsilon", 0.0),
}
NOISE_SEED = 1  # the generator the fixture's eta = 1 cases drew from


def run_recording(name, steps, prediction_type, eta=0.0, seed=NOISE_SEED, timesteps=None):
    """Run sampler `name` on the stand-in model at `timesteps` (default: its spacing for `steps`)
    -> (timesteps seen, latents after each step)."""
    sampler = SAMPLERS[name]
    timesteps = timesteps or sampler.timesteps(steps, 1000)
    pattern = FIXTURE["pattern"]
    seen_timesteps, inputs = [], []

    def stand_in_model(latents, timestep):
        seen_timesteps.append(int(timestep))
        inputs.append(latents.clone())
        return 0.3 * latents + torch.sin(timestep.float() / 100) * pattern

    final = sampler.sample(stand_in_model, FIXTURE["start"].clone(), timesteps, alphas_cumprod(ScheduleConfig()),
                           prediction_type, eta=eta, generator=torch.Generator().manual_seed(seed))
    return seen_timesteps, torch.stack(inputs[1:] + [final])


def test_fixture_cases_are_the_ones_tested():
    assert {key.split(".")[0] for key in FIXTURE if key.endswith(".trajectory")} == set(CASES)


def test_schedule_matches_the_reference():
    """The reference's float32 schedule is ours rounded to float32."""
    ours = alphas_cumprod(ScheduleConfig())
    assert ours.dtype == torch.float64 and ours.shape == (1000,)
    torch.testing.assert_close(ours, FIXTURE["alphas_cumprod"], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", CASES)
def test_sampler_follows_the_reference_step_by_step(name):
    sampler, steps, prediction_type, eta = CASES[name]
    seen_timesteps, trajectory = run_recording(SAMPLER_OF[sampler], steps, prediction_type, eta)
    assert seen_timesteps == FIXTURE[f"{name}.timesteps"].tolist()
    torch.testing.assert_close(trajectory, FIXTURE[f"{name}.trajectory"], **TOLERANCE)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_call_the_model_at_the_timesteps_given_and_nowhere_else(sampler):
    """The pipeline times the ControlNet (control_start / control_end) by the list it gives the sampler;
    a list no spacing makes shows that the sampler does not compute its own."""
    given = [990, 700, 321, 120, 7]
    seen_timesteps, _ = run_recording(sampler, len(given), "epsilon", timesteps=given)
    assert seen_timesteps == given


def test_ancestral_ddim_depends_on_the_generator():
    """eta = 1 draws fresh noise each step; with another seed the path must differ (else the eta = 1
    cases would not test the noise at all)."""
    _, with_seed = run_recording("ddim", 10, "epsilon", eta=1.0)
    _, other_seed = run_recording("ddim", 10, "epsilon", eta=1.0, seed=NOISE_SEED + 1)
    assert (with_seed[-1] - other_seed[-1]).abs().max() > 1e-2


@pytest.mark.parametrize("sampler", ["dpm++2m", "unipc"])
def test_multistep_solvers_ignore_eta_and_generator(sampler):
    _, deterministic = run_recording(sampler, 10, "epsilon", eta=0.0)
    _, with_eta = run_recording(sampler, 10, "epsilon", eta=1.0, seed=NOISE_SEED + 1)
    torch.testing.assert_close(with_eta, deterministic, rtol=0, atol=0)


def test_unipc_corrector_is_what_sets_it_apart_from_dpm_solver():
    """UniP-2 with bh2 is DPM-Solver++(2M)'s update; the corrector makes the difference. Without it the two
    would agree, and the UniPC cases would pass by testing DPM-Solver++ again."""
    _, unipc = run_recording("unipc", 20, "epsilon")
    _, dpm = run_recording("dpm++2m", 20, "epsilon")
    torch.testing.assert_close(unipc[0], dpm[0], rtol=1e-6, atol=1e-6)  # the first step: nothing to correct yet
    assert (unipc[1] - dpm[1]).abs().max() > 1e-3


@pytest.mark.parametrize("steps", [1, 3, 50, 999])
def test_timestep_spacings_match_the_reference(steps):
    assert leading_timesteps(steps, 1000) == FIXTURE[f"ddim_spacing_{steps}"].tolist()
    assert linspace_timesteps(steps, 1000) == FIXTURE[f"dpm_spacing_{steps}"].tolist()


def test_timestep_spacings_by_hand():
    assert leading_timesteps(50, 1000)[:3] == [981, 961, 941] and leading_timesteps(50, 1000)[-1] == 1
    assert linspace_timesteps(20, 1000)[:2] == [999, 949] and linspace_timesteps(20, 1000)[-1] == 50


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("steps, message", [(0, "steps must be at least 1, got 0"),
                                            (-1, "steps must be at least 1, got -1"),
                                            (1000, "steps must be at most 999, got 1000"),
                                            (1001, "steps must be at most 999, got 1001")])
def test_impossible_step_counts_are_refused_before_any_sampler_runs(sampler, steps, message):
    """1000 steps of 1000 is refused too: DDIM's "leading" spacing would start at t = 1000, past the
    schedule (diffusers raises IndexError), and DPM-Solver's "linspace" would repeat t = 500, a zero
    step (diffusers returns NaN)."""
    with pytest.raises(OptionError, match=message):
        SamplingOptions(steps=steps, sampler=sampler)


def test_add_noise_and_velocity_match_the_reference():
    clean, noise, timesteps = FIXTURE["noise.clean"], FIXTURE["noise.noise"], FIXTURE["noise.timesteps"]
    alphas = alphas_cumprod(ScheduleConfig())
    torch.testing.assert_close(add_noise(clean, noise, timesteps, alphas), FIXTURE["noise.noisy"],
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(velocity(clean, noise, timesteps, alphas), FIXTURE["noise.velocity"],
                               rtol=1e-6, atol=1e-6)


def test_predictions_invert_add_noise_and_velocity():
    """epsilon and v outputs both recover (x_0, eps) from x_t, up to float32 rounding (measured 1.5e-6;
    at t = 999 x_0 = (x_t - sqrt(1 - a) eps) / sqrt(a) magnifies it by 1 / sqrt(a) ~ 15)."""
    clean, noise, timesteps = FIXTURE["noise.clean"], FIXTURE["noise.noise"], FIXTURE["noise.timesteps"]
    alphas = alphas_cumprod(ScheduleConfig())
    noisy, v = add_noise(clean, noise, timesteps, alphas), velocity(clean, noise, timesteps, alphas)
    for index, t in enumerate(timesteps.tolist()):
        alpha = float(alphas[t])
        for prediction_type, output in (("epsilon", noise[index]), ("v_prediction", v[index])):
            predicted_clean, predicted_noise = predicted_clean_and_noise(output, noisy[index], alpha, prediction_type)
            torch.testing.assert_close(predicted_clean, clean[index], rtol=0, atol=1e-5)
            torch.testing.assert_close(predicted_noise, noise[index], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="unknown prediction type"):
        predicted_clean_and_noise(noise, noisy, 0.5, "sample")


IMG2IMG = load_file(Path(__file__).parent / "fixtures" / "sampling_img2img.safetensors")
IMG2IMG_CASES = {  # the fixture's runs that start part way: name -> (sampler, steps, prediction type, strength)
    "ddim_10_epsilon_0.3": ("ddim", 10, "epsilon", 0.3),
    "ddim_20_v_0.55": ("ddim", 20, "v_prediction", 0.55),
    "dpm_20_epsilon_0.4": ("dpm", 20, "epsilon", 0.4),
    "dpm_7_v_0.5": ("dpm", 7, "v_prediction", 0.5),
    "dpm_10_epsilon_0.15": ("dpm", 10, "epsilon", 0.15),
    "unipc_20_epsilon_0.35": ("unipc", 20, "epsilon", 0.35),
    "unipc_10_v_0.5": ("unipc", 10, "v_prediction", 0.5),
    "unipc_8_epsilon_0.25": ("unipc", 8, "epsilon", 0.25),
    "unipc_20_epsilon_1.0": ("unipc", 20, "epsilon", 1.0),
}


def test_img2img_fixture_cases_are_the_ones_tested():
    assert {key.rsplit(".", 1)[0] for key in IMG2IMG if key.endswith(".trajectory")} == set(IMG2IMG_CASES)


@pytest.mark.parametrize("name", IMG2IMG_CASES)
def test_a_run_that_starts_part_way_follows_the_reference(name):
    """img2img as diffusers runs it: the tail of the timesteps, the clean latents noised to the first of
    them, then the sampler from there (same tolerance as the full runs)."""
    sampler, steps, prediction_type, strength = IMG2IMG_CASES[name]
    timesteps = part_way_timesteps(SAMPLERS[SAMPLER_OF[sampler]].timesteps(steps, 1000), strength)
    assert timesteps == IMG2IMG[f"{name}.timesteps"].tolist()
    alphas = alphas_cumprod(ScheduleConfig())
    noised = add_noise(IMG2IMG["clean"], IMG2IMG["noise"], torch.tensor(timesteps[:1]), alphas)
    torch.testing.assert_close(noised, IMG2IMG[f"{name}.noised"], rtol=1e-6, atol=1e-6)
    trajectory = []

    def stand_in_model(latents, timestep):
        trajectory.append(latents.clone())
        return 0.3 * latents + torch.sin(timestep.float() / 100) * FIXTURE["pattern"]

    final = SAMPLERS[SAMPLER_OF[sampler]].sample(stand_in_model, noised, timesteps, alphas, prediction_type)
    torch.testing.assert_close(torch.stack(trajectory[1:] + [final]), IMG2IMG[f"{name}.trajectory"], **TOLERANCE)


def test_part_way_timesteps_by_hand():
    timesteps = linspace_timesteps(10, 1000)
    assert part_way_timesteps(timesteps, 1.0) == timesteps
    assert part_way_timesteps(timesteps, 0.3) == timesteps[7:]
    assert part_way_timesteps(timesteps, 0.01) == timesteps[-1:]  # diffusers would run none: at least one
