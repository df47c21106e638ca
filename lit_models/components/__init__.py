"""What tasks are built from, one module per config axis: backbones (`backbone=`), nn (the from-scratch
Transformer and `attention=`), losses (`loss=`), optim (`optimizer=`), schedules (`scheduler=`), init
(`init=`), plus the pooling, heads and metrics the tasks share."""
