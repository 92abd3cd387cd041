^(?P<time>\d\d:\d\d:\d\d\.\d{6}) \[(?P<tid>\d+)\] (?P<call>\w+)\((?P<args>.*)\) = (?P<result>\? \(kernel\)|\? \(interrupted\)|-1 [A-Z]\w* \(.*?\)|-1 errno \d+ \(.*?\)|-?\d+)(?: (?P<note>.*))?$
