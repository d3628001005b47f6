#!/bin/bash
cd /work/main && source .venv/bin/activate && export OMP_NUM_THREADS=1
O=/work/suite/out
start=$(date +%s)
nice -n 5 python -m recurrent_ppo benchmark --suite popgym/NoisyPositionOnlyCartPoleEasy,popgym/PositionOnlyCartPoleEasy,popgym/VelocityOnlyCartPoleEasy,popgym/PositionOnlyPendulumEasy,popgym/NoisyPositionOnlyPendulumEasy,popgym/MineSweeperEasy,popgym/BattleshipEasy,popgym/ConcentrationEasy --seeds 2 --steps 1000000 --compile-mode off --out $O/b-1m
nice -n 5 python -m recurrent_ppo benchmark --suite popgym/AutoencodeEasy --seeds 2 --steps 3000000 --compile-mode off --out $O/b-3m
echo "process B wall $(( $(date +%s) - start )) s"
