#!/usr/bin/env bash
# Prints the search config of the GPU benchmarks: the reference settings (num_beams 5,
# branch 5, n_consistency 7, max_length 1024, steps up to 256 tokens, temperature 0.7)
# over the first N questions of `synth` (tsst data synth --seed 3).
#   bench/gpu/ref-config.sh N POLICY_DIR VALUE_DIR > ref.yaml
n=$1 policy=$2 value=$3
cat <<YAML
task: multiple_choice_steps_beam
dataset_name: aokvqa
dataset_root: synth
data_subset: train
data_partition: '0_$((n-1))'
seed: 5
num_beams: 5
branch: 5
n_consistency: 7
max_length: 1024
step_max_tokens: 256
temperature: 0.7
models:
  - policy_model: $policy
    value_model: $value
    tag: ref
    run_flag: true
    use_value: true
YAML
