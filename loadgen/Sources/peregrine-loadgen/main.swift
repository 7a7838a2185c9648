print("peregrine-loadgen: not yet implemented")
