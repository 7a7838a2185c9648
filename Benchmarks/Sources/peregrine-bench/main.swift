print("peregrine-bench: not yet implemented")
