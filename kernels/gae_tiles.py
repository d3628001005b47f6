"""The GAE scan kernel's tile per size: (num_envs, num_steps) -> (BLOCK_ENVS, BLOCK_STEPS, num_warps,
num_stages, NEXT_FROM_TILE), num_stages None for Triton's default.
`bench/gae_lab/gae_sweep.py --write-tiles` rewrites this file: it times every candidate tile at each size and
keeps the fastest the op's kernel runs. Other sizes take the nearest size's tile.

Measured on: NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, triton 3.6.0, 2026-11-26, bench/gae_lab/gae_sweep.py.
"""

TILES = {
    (1024, 32): (1, 32, 1, None, False),
    (4096, 32): (2, 32, 1, None, True),
    (16384, 32): (4, 32, 1, None, False),
    (131072, 32): (4, 32, 1, None, False),
    (1024, 128): (1, 128, 1, None, True),
    (4096, 128): (1, 128, 1, None, False),
    (16384, 128): (2, 64, 1, None, False),
    (131072, 128): (4, 32, 1, None, False),
    (1024, 512): (1, 512, 4, None, False),
    (4096, 512): (1, 128, 1, None, True),
    (16384, 512): (1, 128, 1, 1, True),
    (131072, 512): (1, 128, 1, None, True),
}
