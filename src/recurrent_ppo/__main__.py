import sys

from recurrent_ppo.cli import main

sys.exit(main())
