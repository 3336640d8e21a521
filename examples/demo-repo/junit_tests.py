"""Runs the unit tests and writes a JUnit XML report to reports/junit.xml."""
import os
import sys
import unittest
import xml.etree.ElementTree as ET


class Recorder(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cases = []

    def addSuccess(self, test):
        super().addSuccess(test)
        self.cases.append((test, None, None))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.cases.append((test, "failure", self._exc_info_to_string(err, test)))

    def addError(self, test, err):
        super().addError(test, err)
        self.cases.append((test, "error", self._exc_info_to_string(err, test)))


suite = unittest.defaultTestLoader.discover(".", pattern="test_*.py")
result = unittest.TextTestRunner(resultclass=Recorder, verbosity=1).run(suite)
root = ET.Element("testsuite", name="demo", tests=str(len(result.cases)))
for test, kind, detail in result.cases:
    cls, _, name = test.id().rpartition(".")
    case = ET.SubElement(root, "testcase", classname=cls, name=name)
    if kind:
        ET.SubElement(case, kind, message=detail.strip().splitlines()[-1]).text = detail
os.makedirs("reports", exist_ok=True)
ET.ElementTree(root).write("reports/junit.xml.tmp", encoding="utf-8", xml_declaration=True)
os.replace("reports/junit.xml.tmp", "reports/junit.xml")
sys.exit(0 if result.wasSuccessful() else 1)
