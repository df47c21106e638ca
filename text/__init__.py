"""The bottom layer: text utilities that data modules and task modules share (reading data files, token ids
and their cache, padding, dialogue encoding, CMRC 2018 scoring, multiple-choice decisions, the DataInfo a data
module hands its task). It imports neither of them."""
