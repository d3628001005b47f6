"""The policy's parts: observation encoders, recurrent cores, action heads, and the policy that joins them."""

from recurrent_ppo.models.cores import CORES, GRU, LSTM, RecurrentCore, RecurrentState, make_core, reset_state
from recurrent_ppo.models.encoders import make_encoder
from recurrent_ppo.models.heads import CategoricalHead, GaussianHead, MultiDiscreteHead, make_head
from recurrent_ppo.models.policy import ActionOutput, EvaluateOutput, LSTMPolicyBundle, RecurrentPolicy

__all__ = ["CORES", "GRU", "LSTM", "ActionOutput", "CategoricalHead", "EvaluateOutput", "GaussianHead",
           "LSTMPolicyBundle", "MultiDiscreteHead", "RecurrentCore", "RecurrentPolicy", "RecurrentState", "make_core", "make_encoder",
           "make_head", "reset_state"]
