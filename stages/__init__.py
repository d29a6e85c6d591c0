"""What a stage is: typed specs, module groups, freeze sets and generated pipeline configs.

Pure logic: nothing here trains, and nothing here reads Hydra's global state.
"""
