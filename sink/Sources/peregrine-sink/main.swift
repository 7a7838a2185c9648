print("peregrine-sink: not yet implemented")
