"""recurrent-ppo: recurrent (LSTM) PPO for GPUs, compiled end to end."""

from recurrent_ppo.buffer import RolloutBuffer, SequenceBatch
from recurrent_ppo.config import PRESETS, TrainConfig
from recurrent_ppo.lstm import LSTM, HiddenState
from recurrent_ppo.policy import ActionOutput, EvaluateOutput, LSTMPolicyBundle, reset_hidden

__all__ = [
    "LSTM", "PRESETS", "ActionOutput", "EvaluateOutput", "HiddenState", "LSTMPolicyBundle", "RolloutBuffer",
    "SequenceBatch", "TrainConfig", "reset_hidden",
]
