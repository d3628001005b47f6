#!/bin/bash
cd /work/main && source .venv/bin/activate && export OMP_NUM_THREADS=1
O=/work/suite/out
start=$(date +%s)
nice -n 5 python -m recurrent_ppo benchmark --suite popgym/CountRecallEasy,popgym/MultiarmedBanditEasy --seeds 2 --steps 3000000 --compile-mode off --out $O/a-3m
nice -n 5 python -m recurrent_ppo benchmark --suite popgym/HigherLowerEasy,popgym/RepeatFirstEasy,popgym/RepeatPreviousEasy --seeds 2 --steps 1000000 --compile-mode off --out $O/a-1m
echo "process A wall $(( $(date +%s) - start )) s"
