"""Recurrent (LSTM) actor and/or critic: one LSTM layer between the normalized observation and the MLP.

Layout (rsl_rl ``ActorCriticRecurrent``): ``obs_norm -> LSTM(lstm_hidden) -> MLP -> mean | value``; a network that is
not recurrent is the plain MLP on ``obs_norm``. DESIGN section 4: 512 hidden, 1 layer.

The recurrent state of every env is one flat tensor ``[N, S]`` held by the caller (the rollout, the evaluation, a
deployment), never by the module: ``S = 2 * lstm_hidden`` per recurrent network, laid out as
``[actor h | actor c | critic h | critic c]`` (only the parts that exist). Zeros mean "an episode starts here".
Collection steps it one env step at a time (:meth:`RecurrentActorCritic.step`); training replays contiguous segments
(:meth:`RecurrentActorCritic.unroll`) from the state stored at each segment's start, zeroing it before every step
that starts an episode, exactly as collection did (cleanrl ``ppo_atari_lstm`` ``get_states``).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from phc_lightning.rl.networks import ActorCritic, actor_critic_mlps, add_log_std

Tensor = torch.Tensor

RECURRENT_CHOICES = ("actor", "critic", "both")
"""Values of ``model.recurrent`` (null: no LSTM)."""

STATE_KEY = "recurrent_state"
"""Minibatch key of the states ``[M, S]`` at the start of each of its ``M`` segments."""

STARTS_KEY = "episode_starts"
"""Minibatch key of ``[L * M]`` bools (time-major): an episode starts at this step, the state is zeroed before it."""


class LSTMMemory(nn.Module):
    """One LSTM layer over ``[B, D]`` inputs with its ``(h, c)`` state flat as ``[B, 2H]``."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        """Orthogonal weights (gain 1) and zero biases, as cleanrl's LSTM agent."""
        super().__init__()
        if in_dim <= 0 or hidden <= 0:
            raise ValueError(f"LSTMMemory: sizes must be positive, got in_dim={in_dim}, hidden={hidden}")
        self.hidden = hidden
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=1)
        for name, param in self.lstm.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0.0)
            else:
                nn.init.orthogonal_(param, 1.0)

    @property
    def state_size(self) -> int:
        """``2 * hidden``: ``h`` then ``c``."""
        return 2 * self.hidden

    def forward(self, x: Tensor, state: Tensor) -> Tuple[Tensor, Tensor]:
        """One step: ``x [B, D]``, ``state [B, 2H]`` -> ``(output [B, H], next state [B, 2H])``."""
        h, c = state.unsqueeze(0).split(self.hidden, dim=-1)
        out, (h, c) = self.lstm(x.unsqueeze(0), (h.contiguous(), c.contiguous()))
        return out[0], torch.cat([h[0], c[0]], dim=-1)

    def unroll(self, x: Tensor, state: Tensor, starts: Tensor) -> Tensor:
        """``x [L, M, D]`` from ``state [M, 2H]``, the state zeroed where ``starts [L, M]`` -> outputs ``[L, M, H]``.

        Step by step with the same call as collection, so replayed outputs equal the collected ones.
        """
        outs = []
        for t in range(x.shape[0]):
            state = state.masked_fill(starts[t].unsqueeze(-1), 0.0)  # an episode starts: as collection reset it
            out, state = self(x[t], state)
            outs.append(out)
        return torch.stack(outs)


class RecurrentActorCritic(nn.Module):
    """:class:`~phc_lightning.rl.networks.ActorCritic` with an LSTM in front of the actor, the critic or both.

    Parameter names extend ActorCritic's (``actor.*``, ``critic.*``, ``log_std``) with ``actor_memory.*`` /
    ``critic_memory.*``.
    """

    # The heads read only ``actor``/``critic``/``log_std``: the same code on the memory's output.
    distribution = ActorCritic.distribution
    value = ActorCritic.value

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        actor_hidden: Sequence[int],
        critic_hidden: Sequence[int],
        recurrent: str,
        lstm_hidden: int = 512,
        layer_norm: bool = True,
        init_log_std: float = -2.9,
        learnable_log_std: bool = False,
        mlp_dtype: str = "float32",
    ) -> None:
        """Build both networks; ``recurrent`` is one of :data:`RECURRENT_CHOICES`, the rest as ActorCritic."""
        if recurrent not in RECURRENT_CHOICES:
            raise ValueError(f"model.recurrent must be one of {RECURRENT_CHOICES} or null, got {recurrent!r}")
        super().__init__()
        self.actor_memory = LSTMMemory(obs_dim, lstm_hidden) if recurrent in ("actor", "both") else None
        self.critic_memory = LSTMMemory(obs_dim, lstm_hidden) if recurrent in ("critic", "both") else None
        actor_in = obs_dim if self.actor_memory is None else lstm_hidden
        critic_in = obs_dim if self.critic_memory is None else lstm_hidden
        # The LSTMs stay float32; only the MLP heads follow mlp_dtype.
        self.actor, self.critic = actor_critic_mlps(
            actor_in, critic_in, actor_hidden, critic_hidden, action_dim, layer_norm, mlp_dtype
        )
        add_log_std(self, action_dim, init_log_std, learnable_log_std)
        self.actor_state_size = 0 if self.actor_memory is None else self.actor_memory.state_size
        self.critic_state_size = 0 if self.critic_memory is None else self.critic_memory.state_size
        self.state_size = self.actor_state_size + self.critic_state_size
        """Width ``S`` of the flat recurrent state."""

    def _split(self, state: Tensor) -> Tuple[Tensor, Tensor]:
        actor, critic = state.split([self.actor_state_size, self.critic_state_size], dim=-1)
        return actor, critic

    @staticmethod
    def _remember(memory: Optional[LSTMMemory], obs_norm: Tensor, state: Tensor) -> Tuple[Tensor, Tensor]:
        return (obs_norm, state) if memory is None else memory(obs_norm, state)

    def step(self, obs_norm: Tensor, state: Tensor) -> Tuple[torch.distributions.Normal, Tensor, Tensor]:
        """One env step: ``obs_norm [N, D]``, ``state [N, S]`` -> ``(policy, value [N], next state [N, S])``."""
        actor_state, critic_state = self._split(state)
        actor_in, actor_state = self._remember(self.actor_memory, obs_norm, actor_state)
        critic_in, critic_state = self._remember(self.critic_memory, obs_norm, critic_state)
        return self.distribution(actor_in), self.value(critic_in), torch.cat([actor_state, critic_state], dim=-1)

    def critic_value(self, obs_norm: Tensor, state: Tensor) -> Tensor:
        """Value ``[N]`` of ``obs_norm [N, D]`` under ``state [N, S]`` (the actor is not run)."""
        critic_in, _ = self._remember(self.critic_memory, obs_norm, self._split(state)[1])
        return self.value(critic_in)

    def actor_step(self, obs_norm: Tensor, actor_state: Tensor) -> Tuple[Tensor, Tensor]:
        """Deployment: ``obs_norm [N, D]``, actor state ``[N, actor_state_size]`` -> ``(mean [N, A], next)``."""
        actor_in, actor_state = self._remember(self.actor_memory, obs_norm, actor_state)
        return self.actor(actor_in), actor_state

    def unroll(self, obs_norm: Tensor, state: Tensor, starts: Tensor) -> Tuple[torch.distributions.Normal, Tensor]:
        """Replay ``M`` segments of ``L`` steps for training.

        Args:
            obs_norm: ``[L * M, D]`` time-major (row ``t * M + m`` is step ``t`` of segment ``m``).
            state: ``[M, S]`` state at each segment's first step.
            starts: ``[L * M]`` bool, an episode starts at this step (the state is zeroed before it).

        Returns:
            ``(policy with batch shape [L * M, A], value [L * M])`` in the rows' order.
        """
        m = state.shape[0]
        x = obs_norm.view(-1, m, obs_norm.shape[-1])
        starts = starts.view(-1, m)
        actor_state, critic_state = self._split(state)
        actor_in = obs_norm if self.actor_memory is None else self.actor_memory.unroll(x, actor_state, starts)
        critic_in = obs_norm if self.critic_memory is None else self.critic_memory.unroll(x, critic_state, starts)
        return self.distribution(actor_in.reshape(obs_norm.shape[0], -1)), self.value(
            critic_in.reshape(obs_norm.shape[0], -1)
        )


def make_actor_critic(
    obs_dim: int,
    action_dim: int,
    actor_hidden: Sequence[int],
    critic_hidden: Sequence[int],
    recurrent: Optional[str],
    lstm_hidden: int,
    **kwargs: Union[bool, float, str],
) -> nn.Module:
    """The plain :class:`ActorCritic` when ``recurrent`` is None (bit for bit the MLP policy), else the LSTM one."""
    if recurrent is None:
        return ActorCritic(obs_dim, action_dim, actor_hidden, critic_hidden, **kwargs)
    return RecurrentActorCritic(obs_dim, action_dim, actor_hidden, critic_hidden, recurrent, lstm_hidden, **kwargs)


def critic_modules(policy: nn.Module) -> Sequence[nn.Module]:
    """The modules trained at the critic's learning rate: its MLP and, if any, its LSTM."""
    memory = getattr(policy, "critic_memory", None)
    return [policy.critic] if memory is None else [policy.critic, memory]


def check_state(state: Optional[Tensor], rows: int, size: int) -> Tensor:
    """``state`` if it is ``[rows, size]``; raises a ValueError naming the expected shape otherwise."""
    if state is None or state.dim() != 2 or tuple(state.shape) != (rows, size):
        got = None if state is None else tuple(state.shape)
        raise ValueError(f"PHCModule: a recurrent policy needs its state of shape [{rows}, {size}], got {got}")
    return state
