"""evoforge.kernels: every reference against a direct quadratic formula, the chunked torch forms against the
recurrences, and the Triton kernels (under the interpreter, on CPU) against the references — values and
every gradient, at awkward shapes, every chunk size, with output buffers pre-filled with NaN."""

from __future__ import annotations

import os

# the Triton kernels are defined when their module is first imported: the interpreter must be on by then
os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from evoforge.kernels import backend  # noqa: E402
from evoforge.kernels.delta_rule import chunk_delta_rule, naive_chunk_delta_rule, naive_recurrent_delta_rule  # noqa: E402
from evoforge.kernels.gated_delta_rule import (  # noqa: E402
    chunk_gated_delta_rule,
    naive_chunk_gated_delta_rule,
    naive_recurrent_gated_delta_rule,
)
from evoforge.kernels.linear_attn import (  # noqa: E402
    chunk_linear_attn,
    naive_chunk_linear_attn,
    naive_recurrent_linear_attn,
)

CHUNK_SIZES = (16, 32, 64, 128)
# (B, H, T, K, V): odd lengths that are not multiples of any chunk size, K = 60 (not a power of two), K ≠ V
SHAPES = ((2, 3, 63, 60, 60), (1, 3, 100, 60, 36))
# the interpreter runs one program per (batch, head) in turn: B = 1 keeps the Triton tests affordable
TRITON_SHAPES = ((1, 3, 63, 60, 60), (1, 3, 100, 60, 36))
# per quantity: (relative to the reference's largest magnitude, absolute floor)
TOLERANCES = {
    "o": (1e-5, 1e-7),
    "dq": (2e-5, 1e-7),
    "dk": (2e-5, 1e-7),
    "dv": (2e-5, 1e-7),
    "dbeta": (5e-5, 1e-7),
    "dg": (5e-5, 1e-7),
    "o_f64": (1e-12, 1e-14),
}


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, tolerance: str | None = None) -> None:
    rel, floor = TOLERANCES[tolerance or name]
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert not torch.isnan(actual).any(), f"{name}: contains NaN (an output element was never written?)"
    error = (actual.double() - expected.double()).abs().max().item()
    bound = floor + rel * expected.double().abs().max().item()
    assert error <= bound, f"{name}: max abs error {error:.3g} > {bound:.3g} (rel {rel}, floor {floor})"


def make_inputs(B, H, T, K, V, delta: bool, dtype=torch.float32, seed=0, gated: bool = False):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, K, generator=gen, dtype=dtype)
    k = torch.randn(B, H, T, K, generator=gen, dtype=dtype)
    if delta:  # DeltaNet's regime: unit-norm keys and queries, β in (0, 1)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    v = torch.randn(B, H, T, V, generator=gen, dtype=dtype)
    inputs = {"q": q, "k": k, "v": v}
    if delta:
        inputs["beta"] = torch.sigmoid(torch.randn(B, H, T, generator=gen, dtype=dtype))
    if gated:  # log decays in (−0.5, 0): strong enough to matter across a 100-token sequence
        inputs["g"] = -0.5 * torch.rand(B, H, T, generator=gen, dtype=dtype)
    do = torch.randn(B, H, T, V, generator=gen, dtype=dtype)
    return {n: t.requires_grad_() for n, t in inputs.items()}, do


def run_with_grads(fn, inputs: dict[str, torch.Tensor], do: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
    for t in inputs.values():
        t.grad = None
    o = fn(*inputs.values(), **kwargs)
    o.backward(do)
    out = {"o": o.detach()}
    out.update({f"d{n}": t.grad.clone() for n, t in inputs.items()})
    return out


def as_float64(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: t.detach().double().requires_grad_() for n, t in inputs.items()}


def quadratic_linear_attn(q, k, v, scale):
    T = q.shape[2]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return (scale * q @ k.transpose(-1, -2)).masked_fill(~causal, 0) @ v


def quadratic_delta_rule(q, k, v, beta, scale):
    """O = (M ⊙ Q̃Kᵀ) (I + strictly_lower(diag(β) K Kᵀ))⁻¹ diag(β) V, solved over the whole sequence at once."""
    T = q.shape[2]
    eye = torch.eye(T, dtype=q.dtype)
    system = eye + (beta[..., :, None] * (k @ k.transpose(-1, -2))).tril(-1)
    U = torch.linalg.inv(system) @ (beta[..., None] * v)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return (scale * q @ k.transpose(-1, -2)).masked_fill(~causal, 0) @ U


def quadratic_gated_delta_rule(q, k, v, beta, g, scale):
    """O = (M ⊙ Γ ⊙ Q̃Kᵀ) (I + strictly_lower(diag(β) Γ ⊙ K Kᵀ))⁻¹ diag(β) V with Γ_ij = exp(Σ_{j<s≤i} g_s)."""
    T = q.shape[2]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    b = g.cumsum(-1)
    decay = (b[..., :, None] - b[..., None, :]).masked_fill(~causal, float("-inf")).exp()
    system = torch.eye(T, dtype=q.dtype) + (beta[..., :, None] * decay * (k @ k.transpose(-1, -2))).tril(-1)
    U = torch.linalg.inv(system) @ (beta[..., None] * v)
    return (decay * (scale * q @ k.transpose(-1, -2))) @ U


@pytest.fixture
def nan_buffers(monkeypatch):
    """Every buffer a Triton wrapper allocates starts as NaN, so an element a kernel never writes fails."""
    real = backend.empty_buffer

    def nan_filled(shape, like, dtype=None):
        return real(shape, like, dtype).fill_(float("nan"))

    monkeypatch.setattr(backend, "empty_buffer", nan_filled)


@pytest.fixture
def triton_calls(monkeypatch):
    """Counts launches of the Triton wrappers, to prove which path ran."""
    from evoforge.kernels.delta_rule import chunk as delta_chunk
    from evoforge.kernels.linear_attn import chunk as linear_chunk

    for kernel in (delta_chunk.chunk_delta_rule_fwd_kernel, linear_chunk.chunk_linear_attn_fwd_kernel):
        assert type(kernel).__name__ == "InterpretedFunction", (
            "the Triton kernels were imported before TRITON_INTERPRET=1 was set; run this file on its own"
        )
    calls: dict[str, int] = {}
    for module in (delta_chunk, linear_chunk):
        for name in [n for n in vars(module) if n.endswith(("_fwd", "_bwd"))]:
            real = getattr(module, name)

            def counted(*args, _real=real, _name=name, **kwargs):
                calls[_name] = calls.get(_name, 0) + 1
                return _real(*args, **kwargs)

            monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("T", [1, 63, 100])
def test_linear_attn_recurrence_matches_quadratic_form(T):
    inputs, _ = make_inputs(2, 3, T, 60, 36, delta=False, dtype=torch.float64)
    scale = 60**-0.5
    assert_close("o", naive_recurrent_linear_attn(*inputs.values()), quadratic_linear_attn(*inputs.values(), scale), "o_f64")


@pytest.mark.parametrize("T", [1, 63, 100])
def test_delta_rule_recurrence_matches_quadratic_form(T):
    inputs, _ = make_inputs(2, 3, T, 60, 36, delta=True, dtype=torch.float64)
    scale = 60**-0.5
    assert_close("o", naive_recurrent_delta_rule(*inputs.values()), quadratic_delta_rule(*inputs.values(), scale), "o_f64")


@pytest.mark.parametrize("T", [1, 63, 100])
def test_gated_delta_rule_recurrence_matches_quadratic_form(T):
    inputs, _ = make_inputs(2, 3, T, 60, 36, delta=True, gated=True, dtype=torch.float64)
    expected = quadratic_gated_delta_rule(*inputs.values(), 60**-0.5)
    assert_close("o", naive_recurrent_gated_delta_rule(*inputs.values()), expected, "o_f64")


def test_gated_delta_rule_without_decay_is_the_delta_rule():
    inputs, _ = make_inputs(1, 3, 63, 60, 36, delta=True, dtype=torch.float64)
    no_decay = torch.zeros(1, 3, 63, dtype=torch.float64)
    for gated, plain in ((naive_recurrent_gated_delta_rule, naive_recurrent_delta_rule),
                         (naive_chunk_gated_delta_rule, naive_chunk_delta_rule)):  # fmt: skip
        assert_close("o", gated(*inputs.values(), no_decay), plain(*inputs.values()), "o_f64")


def test_delta_rule_with_beta_zero_is_the_zero_map_and_beta_one_overwrites():
    inputs, _ = make_inputs(1, 1, 5, 4, 3, delta=True, dtype=torch.float64)
    q, k, v, beta = (t.detach() for t in inputs.values())
    assert naive_recurrent_delta_rule(q, k, v, torch.zeros_like(beta)).abs().max() == 0
    # β = 1 with the same key twice: the second value replaces the first, so reading that key returns it
    k_same = k[:, :, :1].expand(-1, -1, 2, -1).contiguous()
    o = naive_recurrent_delta_rule(k_same, k_same, v[:, :, :2], torch.ones(1, 1, 2), scale=1.0)
    assert torch.allclose(o[0, 0, 1], v[0, 0, 1], atol=1e-12)


TORCH_FORMS = {
    "linear_attn": (naive_chunk_linear_attn, naive_recurrent_linear_attn),
    "delta_rule": (naive_chunk_delta_rule, naive_recurrent_delta_rule),
    "gated_delta_rule": (naive_chunk_gated_delta_rule, naive_recurrent_gated_delta_rule),
}


_REFERENCE_CACHE: dict[tuple, dict[str, torch.Tensor]] = {}


def reference_results(op: str, shape: tuple, seed: int) -> dict[str, torch.Tensor]:
    """The float64 recurrence's output and gradients, computed once per (op, shape, seed) and shared by
    every chunk size (the recurrence is the slow part of these tests)."""
    key = (op, shape, seed)
    if key not in _REFERENCE_CACHE:
        inputs, do = make_inputs(*shape, delta=op != "linear_attn", gated=op == "gated_delta_rule", seed=seed)
        _REFERENCE_CACHE[key] = run_with_grads(TORCH_FORMS[op][1], as_float64(inputs), do.double())
    return _REFERENCE_CACHE[key]


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}H{}T{}K{}V{}".format(*s))
@pytest.mark.parametrize("op", list(TORCH_FORMS))
def test_torch_chunk_form_matches_recurrence(op, shape, chunk_size):
    inputs, do = make_inputs(*shape, delta=op != "linear_attn", gated=op == "gated_delta_rule")
    expected = reference_results(op, shape, seed=0)
    actual = run_with_grads(TORCH_FORMS[op][0], inputs, do, chunk_size=chunk_size)
    assert set(expected) == {"o", *(f"d{n}" for n in inputs)}
    for name in expected:
        assert_close(name, actual[name], expected[name])


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("shape", TRITON_SHAPES, ids=lambda s: "B{}H{}T{}K{}V{}".format(*s))
@pytest.mark.parametrize("op", ["linear_attn", "delta_rule"])
def test_triton_kernels_match_reference(op, shape, chunk_size, nan_buffers, triton_calls):
    public = chunk_delta_rule if op == "delta_rule" else chunk_linear_attn
    inputs, do = make_inputs(*shape, delta=op == "delta_rule", seed=1)
    expected = reference_results(op, shape, seed=1)
    actual = run_with_grads(public, inputs, do, chunk_size=chunk_size, backend="triton")
    assert triton_calls == {f"chunk_{op}_fwd": 1, f"chunk_{op}_bwd": 1}, f"the Triton path did not run: {triton_calls}"
    for name in expected:
        assert_close(name, actual[name], expected[name])


def test_auto_backend_on_cpu_runs_the_torch_reference(triton_calls):
    inputs, do = make_inputs(1, 3, 63, 60, 60, delta=True)
    auto = run_with_grads(chunk_delta_rule, inputs, do, chunk_size=32)
    reference = run_with_grads(naive_chunk_delta_rule, inputs, do, chunk_size=32)
    assert triton_calls == {}
    for name in auto:
        assert torch.equal(auto[name], reference[name]), name
    assert backend.resolve_backend("auto", torch.zeros(1)) == "torch"


def test_nan_fixture_fills_fresh_buffers(nan_buffers):
    assert torch.isnan(backend.empty_buffer((3, 4), like=torch.zeros(1))).all()


def test_bad_arguments_fail_with_clear_messages(monkeypatch):
    inputs, _ = make_inputs(1, 2, 8, 4, 4, delta=True)
    q, k, v, beta = inputs.values()
    with pytest.raises(ValueError, match="backend must be one of .* got 'cuda'"):
        chunk_delta_rule(q, k, v, beta, backend="cuda")
    with pytest.raises(ValueError, match="chunk_size must be one of .* got 48"):
        chunk_linear_attn(q, k, v, chunk_size=48)
    with pytest.raises(AssertionError, match=r"beta must be \(B, H, T\)"):
        chunk_delta_rule(q, k, v, beta[:, :, :4])
    with pytest.raises(ValueError, match="no Triton kernel yet"):
        chunk_gated_delta_rule(q, k, v, beta, torch.zeros_like(beta), backend="triton")
    with pytest.raises(AssertionError, match=r"g must be \(B, H, T\)"):
        chunk_gated_delta_rule(q, k, v, beta, beta[..., :3])
    with pytest.raises(AssertionError, match="v must be"):
        chunk_linear_attn(q, k, v[:, :1])
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        chunk_linear_attn(q, k, v, backend="triton")


def test_empty_sequence_gives_empty_output():
    inputs, _ = make_inputs(1, 2, 0, 4, 5, delta=True)
    assert chunk_delta_rule(*inputs.values()).shape == (1, 2, 0, 5)
    assert chunk_linear_attn(*list(inputs.values())[:3]).shape == (1, 2, 0, 5)
    assert chunk_gated_delta_rule(*inputs.values(), torch.zeros(1, 2, 0)).shape == (1, 2, 0, 5)
