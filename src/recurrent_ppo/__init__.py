"""recurrent-ppo: recurrent (LSTM or GRU) PPO for GPUs, compiled end to end, for every gymnasium space."""

from recurrent_ppo import spaces
from recurrent_ppo.agent import Agent, AgentState, load_agent
from recurrent_ppo.buffer import RolloutBuffer, SequenceBatch
from recurrent_ppo.checkpoint import load_policy
from recurrent_ppo.config import PRESETS, TrainConfig
from recurrent_ppo.envs import StepResult, VectorEnv, make_env
from recurrent_ppo.models import (
    GRU,
    LSTM,
    ActionOutput,
    CategoricalHead,
    EvaluateOutput,
    GaussianHead,
    MultiDiscreteHead,
    RecurrentPolicy,
    RecurrentState,
    make_core,
    make_encoder,
    make_head,
    reset_state,
)
from recurrent_ppo.ppo import PPOSettings, PPOUpdater, ppo_loss
from recurrent_ppo.rollout import Evaluator, RolloutCollector, RolloutSettings

__all__ = [
    "GRU", "LSTM", "PRESETS", "ActionOutput", "Agent", "AgentState", "CategoricalHead", "EvaluateOutput", "Evaluator",
    "GaussianHead", "MultiDiscreteHead", "PPOSettings", "PPOUpdater", "RecurrentPolicy", "RecurrentState",
    "RolloutBuffer", "RolloutCollector", "RolloutSettings", "SequenceBatch", "StepResult", "TrainConfig", "VectorEnv", "load_agent",
    "load_policy", "make_core", "make_encoder", "make_env", "make_head", "ppo_loss", "reset_state", "spaces",
]
