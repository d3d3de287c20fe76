"""What every part of the pipelines shares: configs and command lines, errors, atomic files, keyed randomness,
pixel conversion and the run-folder layout."""
