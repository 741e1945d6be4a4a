"""`minidiff lesson ID --use FILE`: the lesson's figures drawn by the learner's function.

A learner's file that holds minidiff's own function draws what the lesson draws without
--use (the learner's function really is the one called); a typical mistake draws something
else; a file of another exercise, a starter left as written, a lesson that takes no --use,
are each one line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minidiff.cli import main

# lesson, exercise, the learner's name, its figure, a typical mistake (a body for the function; ``R`` is
# minidiff.exercises.reference, the file's other names are minidiff's own)
CASES = [
    ("A1.1", "A1.1", "forward", "forward.png",
     "return alphas_cumprod[t] * im + (1 - alphas_cumprod[t]) * noise  # square roots forgotten"),
    ("A1.2", "A1.2", "blur_denoise", "blur_denoising.png",
     "return R.blur_denoise(x_t, kernel_size, kernel_size)  # the kernel size taken for sigma"),
    ("A1.3", "A1.3", "one_step_denoise", "one_step.png",
     "return (x_t - den(x_t, torch.full((x_t.shape[0],), t))) / alphas_cumprod[t].sqrt()  # no sqrt(1 - ab_t)"),
    ("A1.4", "A1.4", "iterative_denoise", "compare.png",
     "return R.iterative_denoise(den, x, timesteps, alphas_cumprod, 0, generator)  # i_start ignored"),
    ("A1.5", "A1.5", "sample_from_noise", "samples.png",
     "return R.iterative_denoise(den, torch.randn(shape), timesteps, alphas_cumprod, 0, generator)  # x_T unseeded"),
    ("A1.6", "A1.6", "cfg_eps", "cfg.png", "return eps_cond + scale * (eps_cond - eps_uncond)  # starts from eps_cond"),
    ("A1.7", "A1.7", "sdedit", "sdedit.png",
     "return R.iterative_denoise(den, image, timesteps, alphas_cumprod, i_start, generator)  # never noised"),
    ("A1.7.2", "A1.7.2", "inpaint", "inpainting.png",
     "return R.sample_from_noise(den, image.shape, timesteps, alphas_cumprod, generator)  # nothing put back"),
    ("A1.7.2", "A1.7.2b", "repaint", "inpainting.png",
     "return R.repaint(den, image, 1 - mask, timesteps, alphas_cumprod, resample_steps, generator)  # mask inverted"),
    ("A1.8", "A1.8", "anagram_eps", "anagrams_flip.png",
     "return (predict_a(x_t) + predict_b(view(x_t))) / 2  # B's prediction not flipped back"),
    ("A1.9", "A1.9", "hybrid_eps", "hybrids.png", "return eps_a  # no high frequencies of eps_b"),
    ("B1.2", "B1.2", "add_noise", "noising.png", "return (1 - sigma) * x + sigma * noise  # the image faded too"),
    ("B3", "B3.1", "reflow_loss", "fine_tune.png",
     "return R.reflow_loss(model, x1, torch.randn_like(x0), c, p_zero, generator)  # new noise: the pairs uncoupled"),
    ("B2.3.1", "B2.3.1", "ddpm_sample", "samples_by_epoch.png",
     "return R.ddpm_sample(lambda x_t, s: model(x_t, s * 300), x, timesteps, alphas_cumprod, generator)"
     "  # t, not t / T"),
]

# the flow lessons sample with Heun, the learner's function is Euler: minidiff's Euler handed in and the
# learner's own Euler draw the same figure, a mistake another (lesson = exercise, the learner's name, its
# figure, a right body, a typical mistake)
_EULER = ("x = x0\nfor i in range(num_steps):\n"
          "    t = torch.full((x.shape[0],), i / num_steps, device=x.device)\n"
          "    x = x + {step}\nreturn x")
EULER_CASES = [
    ("B2.3", "flow_sample", "samples_by_epoch.png", _EULER.format(step="velocity(x, t) / num_steps"),
     _EULER.format(step="velocity(x, t)  # the step size 1 / N forgotten")),
    ("B2.6", "cfg_flow_sample", "samples_by_epoch.png",
     _EULER.format(step="(model(x, t, torch.zeros_like(c)) + guidance_scale * (model(x, t, c) - "
                        "model(x, t, torch.zeros_like(c)))) / num_steps"),
     _EULER.format(step="(model(x, t, c) + guidance_scale * (model(x, t, torch.zeros_like(c)) - "
                        "model(x, t, c))) / num_steps  # the difference reversed")),
]


def _learner_file(folder: Path, exercise: str, name: str, body: str | None) -> Path:
    """A learner's exercise file: minidiff's own functions (body None), or ``name`` with ``body``
    beside minidiff's own of the exercise's other names."""
    import inspect

    from minidiff.exercises import EXERCISES, reference

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    names = EXERCISES[exercise].names
    assert name in names
    others = [n for n in names if body is None or n != name]
    text = (f'EXERCISE = "{exercise}"\nimport torch  # noqa: F401\n\n'
            "from minidiff.exercises import reference as R  # noqa: F401\n")
    if others:
        text += f"from minidiff.exercises.reference import {', '.join(others)}  # noqa: F401\n"
    if body is not None:
        params = ", ".join(inspect.signature(getattr(reference, name)).parameters)
        text += f"\n\ndef {name}({params}):\n    {body.replace(chr(10), chr(10) + '    ')}\n"  # a body of lines
    path.write_text(text)
    return path


def _figure(out: Path, lesson: str, name: str, *extra: str) -> np.ndarray:
    assert main(["lesson", lesson, "--quick", "--model", "mnist", "--out", str(out), *extra]) == 0
    return np.asarray(Image.open(out / lesson / name).convert("L"), dtype=int)


@pytest.mark.parametrize("lesson, exercise, name, figure, mistake", CASES)
def test_the_learners_function_draws_the_lesson(tmp_path, lesson, exercise, name, figure, mistake):
    plain = _figure(tmp_path / "plain", lesson, figure)
    right = _figure(tmp_path / "right", lesson, figure, "--use",
                    str(_learner_file(tmp_path / "a", exercise, name, None)))
    wrong = _figure(tmp_path / "wrong", lesson, figure, "--use",
                    str(_learner_file(tmp_path / "b", exercise, name, mistake)))
    # minidiff's own function handed in as the learner's: the same figure (a guided pair of model
    # calls instead of one batched call may round a pixel to the next grey level)
    assert right.shape == plain.shape and np.abs(right - plain).max() <= 1
    assert np.abs(wrong - plain).mean() > 1.0, "a wrong function drew the same figure: --use was not used"


@pytest.mark.parametrize("lesson, name, figure, right, mistake", EULER_CASES)
def test_flow_sampling_is_drawn_by_the_learners_euler(tmp_path, lesson, name, figure, right, mistake):
    def drawn(tag: str, body: str | None) -> np.ndarray:
        path = _learner_file(tmp_path / tag, lesson, name, body)
        assert main(["lesson", lesson, "--quick", "--out", str(tmp_path / tag / "o"), "--use", str(path)]) == 0
        return np.asarray(Image.open(tmp_path / tag / "o" / lesson / figure).convert("L"), dtype=int)

    minidiffs, learners, wrong = drawn("minidiff", None), drawn("right", right), drawn("wrong", mistake)
    assert learners.shape == minidiffs.shape and np.abs(learners - minidiffs).max() <= 1
    assert np.abs(wrong - minidiffs).mean() > 1.0, "a wrong function drew the same figure: --use was not used"


def test_each_lesson_says_which_functions_it_draws_with_and_reads_every_one():
    """A lesson takes --use exactly when its USES names functions; each is read in its script as
    ctx.use's key and is a name of an exercise of that lesson, so no exercise file passes unread."""
    import re

    from minidiff.exercises import EXERCISES
    from minidiff.lessons_index import list_lessons

    lessons = list_lessons()
    assert sum(bool(info.uses) for info in lessons) == 15
    for info in lessons:
        assert ("use" in info.options) == bool(info.uses), info.id
        source = info.path.read_text()
        for name in info.uses:
            assert re.search(rf"ctx\.use(\.get\(|\[)\"{name}\"|\"{name}\" in ctx\.use", source), (info.id, name)
            assert any(name in e.names and e.lesson == info.id for e in EXERCISES.values()), (info.id, name)


@pytest.mark.parametrize("lesson, which, message", [
    ("A1.1", "cfg", r"is exercise A1\.6; lesson A1\.1 draws with forward \(exercise A1\.1\); run minidiff lesson A1\.6 "
                    r"--use"),
    # a loss no lesson trains with is refused, never run past: the lesson would draw with minidiff's own functions
    ("B2.3", "loss", r"is exercise B2\.2; lesson B2\.3 draws with flow_sample \(exercise B2\.3\); no lesson draws with "
                     r"flow_loss: minidiff check .*flow_loss\.py tests it"),
    ("B2.6", "reflow", r"is exercise B3\.1; lesson B2\.6 draws with cfg_flow_sample \(exercise B2\.6\); run "
                       r"minidiff lesson B3 --use"),
    ("A0", "cfg", r"lesson A0 does not use --use; the lessons that do: A1\.1, A1\.2, A1\.3, A1\.4, A1\.5, "
                  r"A1\.6, A1\.7, A1\.7\.2, A1\.8, A1\.9, B1\.2, B2\.3, B2\.3\.1, B2\.6, B3"),
    ("all", "cfg", r"--use draws one lesson"),
    ("A1.1", "starter", r"forward in .* is not implemented yet"),
    ("B3", "float loss", r"your reflow_loss returned float; it returns the loss, a 0-d tensor"),
    ("A1.1", "missing", r"no file"),
])
def test_a_wrong_use_is_one_line(tmp_path, capsys, lesson, which, message):
    import re

    from minidiff.exercises import write_starter

    path = {"cfg": lambda: _learner_file(tmp_path, "A1.6", "cfg_eps", None),
            "starter": lambda: write_starter("A1.1", tmp_path),
            "loss": lambda: _learner_file(tmp_path, "B2.2", "flow_loss", None),
            "reflow": lambda: _learner_file(tmp_path, "B3.1", "reflow_loss", None),
            "float loss": lambda: _learner_file(tmp_path, "B3.1", "reflow_loss", "return 0.5"),
            "missing": lambda: tmp_path / "nowhere.py"}[which]()
    model = ["--model", "mnist"] if lesson[0] in "Aa" else []
    assert main(["lesson", lesson, "--quick", *model, "--out", str(tmp_path / "o"), "--use", str(path)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1 and "Traceback" not in err, err
