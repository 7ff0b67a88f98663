"""The built-in actions, one module each, registered by name in janitor/actions/base.py.

Importing this package loads none of them: the engine needs only the contract in `base`,
and the front ends load the plug-ins once through janitor/plugins.py.
"""
