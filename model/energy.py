"""The continuous Hopfield network's energy, cost and their state gradient.

Written directly from the paper (Gammell et al., "Layer-skipping connections
facilitate training of layered networks using equilibrium propagation"):

* rho, eq. (1): the hardened sigmoid, with rho'(0) = rho'(1) = 1 by definition
  so that neurons at the bounds of [0, 1] are not frozen;
* E, eq. (2): E(u) = 1/2 u.u - 1/2 rho(u)^T W rho(u) - b.u;
* C, section 3: the squared error ||y - y_d||^2 *without* eq. (3)'s 1/2 (the
  paper's implementation, section 3, and Scellier & Bengio's code use this
  form; its gradient is 2 (y - y_d));
* F, eq. (4): F = E + beta * C.

These functions work on the full state u = (x, s) of every neuron and are
used by the tests (autograd of F is the independent check of ``grad_s``) and
for reporting energies. The training hot path is ``FloatNetwork.step`` in
``float_net.py``, which computes the same gradient without forming u.
"""

from __future__ import annotations

import torch


def rho(u: torch.Tensor) -> torch.Tensor:
    """Eq. (1): hardened sigmoid, clip(u, 0, 1)."""
    return u.clamp(0.0, 1.0)


def rho_prime(u: torch.Tensor) -> torch.Tensor:
    """Derivative of eq. (1) with rho'(0) = rho'(1) = 1 (1 on the closed [0, 1])."""
    return ((u >= 0.0) & (u <= 1.0)).to(u.dtype)


def energy(u: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eq. (2) per example. u: (B, N), W: (N, N) symmetric, zero diagonal, b: (N,)."""
    r = rho(u)
    return 0.5 * (u * u).sum(-1) - 0.5 * ((r @ W) * r).sum(-1) - u @ b


def cost(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Section 3's squared error ||y - y_d||^2 per example."""
    return ((y - target) ** 2).sum(-1)


def total_energy(u, W, b, beta, target, n_output: int) -> torch.Tensor:
    """Eq. (4): F = E + beta * C, with y the last ``n_output`` neurons of u."""
    return energy(u, W, b) + beta * cost(u[:, -n_output:], target)


def grad_s(u, W, b, beta, target, n_input: int, n_output: int) -> torch.Tensor:
    """dF/ds for the non-input neurons s = u[:, n_input:], written out by hand.

    dE/du_i = u_i - rho'(u_i) * sum_j W_ij rho(u_j) - b_i   (W symmetric)
    dC/dy_k = 2 (y_k - y_d,k)
    """
    g = u - rho_prime(u) * (rho(u) @ W) - b
    g = g[:, n_input:].clone()
    if beta != 0.0:
        g[:, -n_output:] += beta * 2.0 * (u[:, -n_output:] - target)
    return g
