#!/usr/bin/env bash
# Transfer on Fashion-MNIST, offline: pretrain a ConvNet on classes 0-4 once, then fine-tune it on 100 images per
# class of classes 5-9 with each strategy, and train the same ConvNet from scratch, 3 seeds each. Run from the repo
# root; results land in logs/transfer/ and the table is printed at the end (experiments/transfer/README.md).
set -euo pipefail
PRE=logs/transfer/pretrain
OUT=logs/transfer/finetune
python train.py model=convnet 'data.classes=[0,1,2,3,4]' trainer.max_epochs=4 seed=0 hydra.run.dir=$PRE

# The small-data task: classes 5-9, 100 training images per class (a new seeded subset per seed), 500 for
# validation; cosine schedule, 10 epochs of 10 steps.
FT=("data.classes=[5,6,7,8,9]" data.train_per_class=100 data.val_size=500 data.batch_size=50
    'data.split_seed=${seed}' scheduler=cosine trainer.max_epochs=10 seed=0,1,2)
python train.py -m model=transfer model.backbone=convnet model.init_from=$PRE \
    model.finetune=head,last_n,staged,full model.unfreeze_last=1 model.unfreeze_at_epoch=3 "${FT[@]}" \
    hydra.sweep.dir=$OUT/strategies
python train.py -m model=transfer model.backbone=convnet model.init_from=$PRE model.finetune=full \
    optimizer.backbone_lr_scale=0.1 "${FT[@]}" hydra.sweep.dir=$OUT/lower_backbone_lr
python train.py -m model=convnet "${FT[@]}" hydra.sweep.dir=$OUT/scratch

python -m ablate.table $OUT --metrics test/acc val/acc_best train/acc --out experiments/transfer/results.md
