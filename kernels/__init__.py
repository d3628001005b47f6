"""Triton kernels of recurrent_ppo, one file per op (kernel -> launcher -> registered op -> public op),
each with the pure-torch reference beside it."""
