# Sourced by warm.sh and perceive.sh: the warm-up settings they share (warmup.py train),
# beside each run's own pack, output, minutes, learning rate and shape.
WARM_ARGS=(--seed 0 --steps 40000 --batch 128 --warmup-steps 200 --eval-every 250 --eval-n 250
  --eval-batch 256 --test-n 500 --max-new 128 --log-every 200 --value-steps 2000
  --value-max-minutes 0.7 --value-eval-every 500 --value-eval-n 1500 --value-n 60000)
