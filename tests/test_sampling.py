"""The samplers against diffusers' schedulers, step by step (fixture: tests/fixtures/make_sampling_fixtures.py).

The stand-in network model(x, t) = 0.3 x + sin(t / 100) * PATTERN makes every step depend on the
previous one, so a wrong timestep, alpha or update anywhere shows in all later latents.
Tolerance: 1e-5 relative plus 1e-5 absolute. Our schedule is float64 and diffusers' float32, so the
two differ by float32 rounding; the stand-in lets DPM-Solver's latents grow to ~20, where we measured
at most 1.5e-5 absolute, 7.3e-7 relative.
"""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from salient_outpaint.config import ScheduleConfig
from salient_outpaint.sampling import ddim_sample, dpm_solver_sample
from salient_outpaint.sampling.schedule import (add_noise, alphas_cumprod, leading_timesteps, linspace_timesteps,
                                                predicted_clean_and_noise, velocity)

FIXTURE = load_file(Path(__file__).parent / "fixtures" / "sampling.safetensors")
CASES = {  # the fixture's cases: name -> (sampler, steps, prediction type, eta)
    "ddim_10_epsilon": (ddim_sample, 10, "epsilon", 0.0),
    "ddim_20_v": (ddim_sample, 20, "v_prediction", 0.0),
    "ddim_10_epsilon_eta1": (ddim_sample, 10, "epsilon", 1.0),
    "dpm_20_epsilon": (dpm_solver_sample, 20, "epsilon", 0.0),
    "dpm_10_v": (dpm_solver_sample, 10, "v_prediction", 0.0),
    "dpm_25_epsilon": (dpm_solver_sample, 25, "epsilon", 0.0),
}


def test_schedule_matches_the_reference():
    ours = alphas_cumprod(ScheduleConfig())
    torch.testing.assert_close(ours, FIXTURE["alphas_cumprod"], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", CASES)
def test_sampler_follows_the_reference_step_by_step(name):
    sampler, steps, prediction_type, eta = CASES[name]
    pattern, start = FIXTURE["pattern"], FIXTURE["start"]
    seen_timesteps, inputs = [], []

    def stand_in_model(latents, timestep):
        seen_timesteps.append(int(timestep))
        inputs.append(latents.clone())
        return 0.3 * latents + torch.sin(timestep.float() / 100) * pattern

    final = sampler(stand_in_model, start.clone(), steps, alphas_cumprod(ScheduleConfig()), prediction_type,
                    eta=eta, generator=torch.Generator().manual_seed(1))
    assert seen_timesteps == FIXTURE[f"{name}.timesteps"].tolist()
    trajectory = torch.stack(inputs[1:] + [final])  # the latents after each step
    torch.testing.assert_close(trajectory, FIXTURE[f"{name}.trajectory"], rtol=1e-5, atol=1e-5)


def test_timestep_spacings():
    assert leading_timesteps(50, 1000)[:3] == [981, 961, 941] and leading_timesteps(50, 1000)[-1] == 1
    assert linspace_timesteps(20, 1000)[:2] == [999, 949]
    for spacing in (leading_timesteps, linspace_timesteps):
        for steps in (0, 1001):
            with pytest.raises(ValueError, match="steps must be between 1 and 1000"):
                spacing(steps, 1000)


def test_noise_velocity_and_predictions_are_consistent():
    alphas = alphas_cumprod(ScheduleConfig())
    clean, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    timesteps = torch.tensor([0, 500, 999])
    noisy, v = add_noise(clean, noise, timesteps, alphas), velocity(clean, noise, timesteps, alphas)
    for index, t in enumerate(timesteps.tolist()):
        alpha = float(alphas[t])
        for prediction_type, output in (("epsilon", noise[index]), ("v_prediction", v[index])):
            predicted_clean, predicted_noise = predicted_clean_and_noise(output, noisy[index], alpha, prediction_type)
            torch.testing.assert_close(predicted_clean, clean[index], rtol=0, atol=2e-3 if t == 999 else 1e-4)
            torch.testing.assert_close(predicted_noise, noise[index], rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="unknown prediction type"):
        predicted_clean_and_noise(noise, noisy, 0.5, "sample")
