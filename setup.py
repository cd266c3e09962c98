"""Packaging for prior_nbdev: the nbdev-2 layout, everything read from settings.ini."""
from configparser import ConfigParser
import shlex
import setuptools

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

expected = ('version description keywords author author_email license status min_python '
            'audience language lib_name git_url'.split())
missing = [key for key in expected if key not in cfg]
if missing: raise SystemExit(f'settings.ini is missing {missing}')

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13'.split()
license_name, license_classifier = licenses[cfg['license'].lower()]
min_python = cfg['min_python']
extras = {name.strip(): shlex.split(reqs) for name, reqs in (e.split(':', 1) for e in cfg.get('extras', '').split(';') if e.strip())}

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    keywords=cfg['keywords'],
    author=cfg['author'],
    author_email=cfg['author_email'],
    license=license_name,
    classifiers=[f"Development Status :: {statuses[int(cfg['status'])]}",
                 f"Intended Audience :: {cfg['audience'].title()}",
                 'Natural Language :: ' + cfg['language'].title(),
                 'License :: ' + license_classifier]
                + [f'Programming Language :: Python :: {v}' for v in py_versions[py_versions.index(min_python):]],
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=[cfg['lib_name'], cfg['lib_name'] + '.*']),
    include_package_data=True,
    install_requires=shlex.split(cfg.get('requirements', '')),
    extras_require={'dev': shlex.split(cfg.get('dev_requirements', '')), **extras},
    python_requires='>=' + min_python,
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={'console_scripts': cfg.get('console_scripts', '').split(),
                  'prior_nbdev.clips': cfg.get('clip_builders', '').split(),
                  'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
