#!/bin/bash
# The popgym preset with --skip-core: the 3M tasks, then the 1M tasks (Concentration: docs/measurements.md, seed 1 at 3M).
cd /work/main && source .venv/bin/activate
O=/work/suite_skip/out
start=$(date +%s)
nice -n 5 python -m recurrent_ppo benchmark --suite popgym/AutoencodeEasy,popgym/CountRecallEasy,popgym/MultiarmedBanditEasy --seeds 2 --steps 3000000 --processes 2 --compile-mode off --skip-core --out $O/3m
echo "3M wall $(( $(date +%s) - start )) s"
nice -n 5 python -m recurrent_ppo benchmark --suite popgym/HigherLowerEasy,popgym/RepeatFirstEasy,popgym/RepeatPreviousEasy,popgym/NoisyPositionOnlyCartPoleEasy,popgym/PositionOnlyCartPoleEasy,popgym/VelocityOnlyCartPoleEasy,popgym/PositionOnlyPendulumEasy,popgym/NoisyPositionOnlyPendulumEasy,popgym/MineSweeperEasy,popgym/BattleshipEasy --seeds 2 --steps 1000000 --processes 2 --compile-mode off --skip-core --out $O/1m
echo "all wall $(( $(date +%s) - start )) s"
