"""AD CS web enrollment (/certsrv), sans-I/O: ``client`` builds requests and reads pages, ``server``
writes the pages and reads submissions, ``hresults`` holds AD CS's codes.  Imports nothing here.
"""
