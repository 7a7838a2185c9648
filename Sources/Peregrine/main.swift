print("peregrine: not yet implemented")
