# cpuu-fleet: run-task
<#
.SYNOPSIS
    Runs a command in the interactive user's session through a one-shot scheduled task.
.DESCRIPTION
    WinRM runs in session 0 under a network logon and cannot see the logged-on user's HKCU, where
    the Outlook profiles live. CPUU must therefore run as a scheduled task whose principal is the
    interactive user (logon type Interactive, given by SID), or, when nobody is logged on and the
    play allows it, as an at-logon task for ONE user (-ExpectedUser, else the host's last user),
    which runs once for that user and expires.

    Actions: Start (register and start), Wait (poll until it is no longer running; stop it when
    -TimeoutSeconds passes), Run (Start then Wait), Status (-RemoveEnded: and unregister a task
    whose run is over, after reading it), Stop, Remove (unregister).
    Output: one hashtable describing the task (see docs/remote-scripts.md). LastTaskResult is kept
    whole: CPUU's exit code is a bit mask whose values above 255 are real.

    The task runs -Command in -WorkingDirectory, a folder of this run's own that Start fills
    from -SourceDirectory (the staging folder) and gives to the task's user alone: CPUU reads its
    INI and writes its results there, and nothing one user leaves there reaches another's run.

    Never twice: before anything is registered, Start claims a marker file named after the task in
    -StateDirectory\runs, created with FileMode CreateNew (fails if it exists, atomically). A task
    whose marker exists is never registered or started again by this script, whoever calls it
    (a retry, a resumed controller, a second controller): the marker records when it started, as
    whom, whether it was killed on its deadline and its exit code, and outlives the task itself.

    Windows as documented: Start-ScheduledTask is asynchronous (Wait gives the instance a grace
    period to come up, then reports NotStarted and disables the task); Stop-ScheduledTask ends
    only the process it started, cmd.exe, not CPUU, its child (a kill takes the process tree,
    then waits until the task no longer reads Running); Unregister-ScheduledTask stops nothing
    (Remove kills the tree first). See docs/remote-scripts.md for every assumption.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [ValidateSet('Start', 'Wait', 'Run', 'Status', 'Stop', 'Remove')]
    [string]$Action,

    [Parameter(Mandatory = $true)]
    [string]$TaskName,

    [string]$Command,

    [string]$WorkingDirectory,

    [ValidateSet('Skip', 'AtLogon')]
    [string]$WhenNoUser = 'Skip',

    [ValidateRange(1, 604800)]
    [int]$TimeoutSeconds = 3600,

    [string]$StateDirectory = 'C:\ProgramData\cpuu-fleet\state',

    [string[]]$ExpectedUser,

    [string]$SourceDirectory,

    [ValidateSet('Skip', 'Run')]
    [string]$Disconnected = 'Run',

    [switch]$RemoveEnded
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$taskPath = '\cpuu-fleet\'
$hasNotRun = 267011     # 0x41303 SCHED_S_TASK_HAS_NOT_RUN
$running = 267009       # 0x41301 SCHED_S_TASK_RUNNING
$terminated = 267014    # 0x41306 SCHED_S_TASK_TERMINATED: stopped (by us, or the time limit)
$pollSeconds = 2
$startGraceSeconds = 60  # Start-ScheduledTask returns before the instance exists
$stopSettleSeconds = 30  # how long a kill waits for the task to stop reading Running
$taskPriority = 5        # TaskSettings.Priority 4-6: interactive tasks (default 7: below normal)
$atLogonDays = 14        # an at-logon task's trigger expires (EndBoundary) after this
$keepRunDays = 30        # a run folder goes this long after its run ended (a payload copy each)

function Stop-RunTask {
    # A terminating error with a contract error id.
    param([string]$Message, [string]$Id, [System.Management.Automation.ErrorCategory]$Category)
    $exception = New-Object -TypeName System.ArgumentException -ArgumentList $Message
    $record = New-Object -TypeName System.Management.Automation.ErrorRecord -ArgumentList @(
        $exception, $Id, $Category, $TaskName)
    $PSCmdlet.ThrowTerminatingError($record)
}

function Assert-TrustedFolder {
    # The folder CPUU would run from must be owned by SYSTEM, Administrators or this account
    # (as upload checks): a local user who created it first may have planted a DLL beside CPUU.
    param([string]$Path)
    if ([string]::IsNullOrEmpty($Path) -or -not (Test-Path -LiteralPath $Path -PathType Container)) {
        return
    }
    $owner = (Get-Acl -LiteralPath $Path -ErrorAction Stop).GetOwner([System.Security.Principal.SecurityIdentifier])
    $self = [System.Security.Principal.WindowsIdentity]::GetCurrent().User
    if ($null -eq $owner -or @('S-1-5-18', 'S-1-5-32-544', $self.Value) -notcontains $owner.Value) {
        Stop-RunTask -Message ("The staging folder '" + $Path + "' is owned by " + $owner + ', not by SYSTEM or Administrators: another account created it and may have placed files in it. Nothing is run from it.') `
            -Id 'UntrustedStaging' -Category ([System.Management.Automation.ErrorCategory]::SecurityError)
    }
}

function New-FleetRule {
    param([string]$Sid, [string]$Rights, [switch]$Container)
    $inherit = [System.Security.AccessControl.InheritanceFlags]::None
    if ($Container) {
        $inherit = [System.Security.AccessControl.InheritanceFlags]'ContainerInherit, ObjectInherit'
    }
    $identity = New-Object -TypeName System.Security.Principal.SecurityIdentifier -ErrorAction Stop -ArgumentList $Sid
    New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ErrorAction Stop -ArgumentList @(
        $identity, ([System.Security.AccessControl.FileSystemRights]$Rights), $inherit,
        [System.Security.AccessControl.PropagationFlags]::None, [System.Security.AccessControl.AccessControlType]::Allow)
}

function Remove-OldRunFolders {
    # Each run folder holds a copy of the payload: those of runs that ended more than
    # $keepRunDays ago go, oldest first, when a new one is made. Only a folder whose run's marker
    # says it ended (FinishedAt, or KilledAt) is removed: a pending at-logon run's folder, a
    # set-aside folder (no marker) and this run's own stay. Directory.Delete(path, $true) removes
    # a junction or symbolic link a user left inside, never its target (documented), so nothing
    # outside the folder is touched; a folder that cannot be removed now (a file in use) is
    # named in a warning and tried again next time.
    param([string]$Root)
    $cutoff = [DateTime]::UtcNow.AddDays(-$keepRunDays)
    $runs = Join-Path -Path $StateDirectory -ChildPath 'runs'
    foreach ($folder in @(Get-ChildItem -LiteralPath $Root -Directory -Force -ErrorAction SilentlyContinue)) {
        $markerPath = Join-Path -Path $runs -ChildPath ($folder.Name + '.json')
        if ($folder.FullName -eq $WorkingDirectory.TrimEnd('\') -or -not (Test-Path -LiteralPath $markerPath -PathType Leaf)) {
            continue
        }
        try {
            $marker = ConvertFrom-Json -InputObject ([System.IO.File]::ReadAllText($markerPath, [System.Text.Encoding]::UTF8))
        }
        catch {
            continue  # a claim whose content was never written: its run's end is unknown
        }
        $ended = $null
        foreach ($name in @('FinishedAt', 'KilledAt')) {
            $property = $marker.PSObject.Properties[$name]
            if ($null -eq $ended -and $null -ne $property -and -not [string]::IsNullOrEmpty([string]$property.Value)) {
                $ended = [DateTime]::Parse([string]$property.Value, [System.Globalization.CultureInfo]::InvariantCulture,
                    [System.Globalization.DateTimeStyles]::RoundtripKind).ToUniversalTime()
            }
        }
        if ($null -eq $ended -or $ended -ge $cutoff) {
            continue
        }
        try {
            [System.IO.Directory]::Delete($folder.FullName, $true)
        }
        catch {
            Write-Warning ('The run folder ' + $folder.FullName + ' of a run that ended on ' + $ended.ToString('o') + ' could not be removed now: ' + $_.Exception.Message)
        }
    }
}

function New-RunFolder {
    # CPUU's working directory for this run only (-WorkingDirectory, below the staging root):
    # a protected folder filled with a copy of -SourceDirectory (the payload, the batch files,
    # the INI), then given to the task's user with Modify. CPUU runs from it and writes its
    # CPUU_* files into it. Only SYSTEM, Administrators and that user can read the INI there or
    # see the results; what that user places beside CPUU reaches only this run, never another
    # user's (the staging folder stays read-only to Users). A copied file takes its new folder's
    # inherited access (CopyFile copies no DACL; "Permissions when you copy and move files"), and
    # Set-Acl on the folder propagates the user's inheritable rule to the copies (assumption).
    param([string]$Sid)
    $root = [System.IO.Path]::GetDirectoryName($WorkingDirectory.TrimEnd('\'))
    if (-not (Test-Path -LiteralPath $root -PathType Container)) {
        $null = New-Item -ItemType Directory -Path $root -ErrorAction Stop
    }
    Assert-TrustedFolder -Path $root
    Remove-OldRunFolders -Root $root
    if (Test-Path -LiteralPath $WorkingDirectory) {
        # Left by a start that failed after making it (the claim was given back): its user may
        # have written to it, so it is never reused. A rename follows no junction inside.
        $aside = $WorkingDirectory.TrimEnd('\').Split('\')[-1] + '.set-aside-' +
            [DateTime]::UtcNow.ToString('yyyyMMddHHmmssfff')
        Rename-Item -LiteralPath $WorkingDirectory -NewName $aside -ErrorAction Stop
    }
    $null = New-Item -ItemType Directory -Path $WorkingDirectory -ErrorAction Stop
    $security = New-Object -TypeName System.Security.AccessControl.DirectorySecurity -ErrorAction Stop
    $security.SetAccessRuleProtection($true, $false)
    $security.AddAccessRule((New-FleetRule -Sid 'S-1-5-18' -Rights 'FullControl' -Container))
    $security.AddAccessRule((New-FleetRule -Sid 'S-1-5-32-544' -Rights 'FullControl' -Container))
    Set-Acl -LiteralPath $WorkingDirectory -AclObject $security -ErrorAction Stop
    Get-ChildItem -LiteralPath $SourceDirectory -Force -ErrorAction Stop |
        Copy-Item -Destination $WorkingDirectory -Recurse -Force -ErrorAction Stop
    $security.AddAccessRule((New-FleetRule -Sid $Sid -Rights 'Modify' -Container))
    Set-Acl -LiteralPath $WorkingDirectory -AclObject $security -ErrorAction Stop
}

function Get-FleetTask {
    Get-ScheduledTask -TaskPath $taskPath -TaskName $TaskName -ErrorAction SilentlyContinue
}

function Get-MarkerPath {
    # The task name is ours ("cpuu-fleet <mode> <run id>"); anything a file name cannot hold is
    # replaced all the same, so a hostile or mistaken name never leaves the runs folder.
    $safe = [regex]::Replace($TaskName, '[^A-Za-z0-9 ._-]', '_')
    return (Join-Path -Path (Join-Path -Path $StateDirectory -ChildPath 'runs') -ChildPath ($safe + '.json'))
}

function Read-Marker {
    $path = Get-MarkerPath
    if (-not (Test-Path -LiteralPath $path -PathType Leaf)) {
        return $null
    }
    $text = [System.IO.File]::ReadAllText($path, [System.Text.Encoding]::UTF8)
    if ([string]::IsNullOrEmpty($text)) {
        # Claimed, and the claim's content never written (power loss): started, nothing more known.
        return @{ TaskName = $TaskName; StartedAt = $null; Trigger = 'Now'; User = $null;
            Killed = $false; ExitCode = $null; Launched = $false }
    }
    $object = ConvertFrom-Json -InputObject $text
    $marker = @{}
    foreach ($property in $object.PSObject.Properties) {
        $marker[$property.Name] = $property.Value
    }
    return $marker
}

function Write-Marker {
    param([Parameter(Mandatory = $true)][hashtable]$Marker)
    $path = Get-MarkerPath
    $temp = $path + '.tmp'
    $json = ConvertTo-Json -InputObject $Marker -Compress
    [System.IO.File]::WriteAllText($temp, $json, (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false))
    if (Test-Path -LiteralPath $path -PathType Leaf) {
        [System.IO.File]::Replace($temp, $path, $null)
    }
    else {
        [System.IO.File]::Move($temp, $path)
    }
}

function New-Marker {
    # Claim the run: CreateNew fails when the file exists, so of two callers only one claims it.
    param([string]$User, [string]$Sid, [string]$Trigger)
    $folder = Join-Path -Path $StateDirectory -ChildPath 'runs'
    $null = [System.IO.Directory]::CreateDirectory($folder)
    $path = Get-MarkerPath
    try {
        $stream = [System.IO.File]::Open($path, [System.IO.FileMode]::CreateNew,
            [System.IO.FileAccess]::Write, [System.IO.FileShare]::None)
    }
    catch [System.IO.IOException] {
        return $null
    }
    $marker = @{
        TaskName       = $TaskName
        StartedAt      = [DateTime]::UtcNow.ToString('o')
        Trigger        = $Trigger
        User           = $User
        UserSid        = $Sid
        Command        = $Command
        TimeoutSeconds = $TimeoutSeconds
        Launched       = $false
        Killed         = $false
        ExitCode       = $null
    }
    try {
        $bytes = (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false).GetBytes(
            (ConvertTo-Json -InputObject $marker -Compress))
        $stream.Write($bytes, 0, $bytes.Length)
    }
    finally {
        $stream.Dispose()
    }
    return $marker
}

function Get-AccountName {
    # The account name of a SID; the SID itself when this host cannot translate it.
    param([string]$Sid)
    try {
        $identifier = New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList $Sid
        return [string]$identifier.Translate([System.Security.Principal.NTAccount]).Value
    }
    catch {
        return $Sid
    }
}

function Get-AccountSid {
    # The SID of an account name; $null when this host cannot translate it (AzureAD\Name).
    param([string]$Name)
    try {
        $account = New-Object -TypeName System.Security.Principal.NTAccount -ArgumentList $Name
        return [string]$account.Translate([System.Security.Principal.SecurityIdentifier]).Value
    }
    catch {
        return $null
    }
}

function Get-InteractiveUser {
    # The console session's user: @{ Name; Sid }, or $null when nobody is logged on. The name is
    # Win32_ComputerSystem.UserName; the SID is the owner of that user's explorer.exe
    # (Win32_Process.GetOwnerSid). Task Scheduler is given the SID, never the name: Entra ID
    # users come back as AzureAD\Name, which it cannot map (0x80070534).
    $userName = [string](Get-CimInstance -ClassName Win32_ComputerSystem -ErrorAction Stop).UserName
    if ([string]::IsNullOrEmpty($userName)) {
        return $null
    }
    foreach ($session in @(Get-ShellSessions)) {
        if ($session['Name'] -eq $userName) {
            return @{ Name = $userName; Sid = $session['Sid'] }
        }
    }
    # No shell of that user yet: a name this host can translate still gives the SID.
    $sid = Get-AccountSid -Name $userName
    if ($null -eq $sid) {
        Stop-RunTask -Message ('The logged-on user ' + $userName + ' cannot be mapped to a SID.') `
            -Id 'UnmappedUser' -Category ([System.Management.Automation.ErrorCategory]::ObjectNotFound)
    }
    return @{ Name = $userName; Sid = $sid }
}

function Get-ShellSessions {
    # Every user with an interactive shell, in any session (console, RDP, a disconnected one):
    # the owners of explorer.exe, @{ Name; Sid; SessionId }, each user once, by session id.
    # Win32_ComputerSystem.UserName names the console's user only (documented), so an RDP user
    # is found here or nowhere. A session without explorer.exe (still starting, a custom shell)
    # is not seen.
    $found = @{}
    $shells = @(Get-CimInstance -ClassName Win32_Process -Filter "Name='explorer.exe'" -ErrorAction Stop |
        Sort-Object -Property SessionId)
    foreach ($shell in $shells) {
        $owner = Invoke-CimMethod -InputObject $shell -MethodName GetOwner -ErrorAction SilentlyContinue
        $ownerSid = Invoke-CimMethod -InputObject $shell -MethodName GetOwnerSid -ErrorAction SilentlyContinue
        if ($null -eq $owner -or [int]$owner.ReturnValue -ne 0 -or $null -eq $ownerSid -or [int]$ownerSid.ReturnValue -ne 0) {
            continue
        }
        $sid = [string]$ownerSid.Sid
        if (-not $found.ContainsKey($sid)) {
            $found[$sid] = @{ Name = ([string]$owner.Domain + '\' + [string]$owner.User); Sid = $sid;
                SessionId = [int]$shell.SessionId }
        }
    }
    return @($found.Values | Sort-Object -Property { $_['SessionId'] })
}

function Get-DisconnectedSessionIds {
    # The ids of the disconnected sessions among -Sessions (@{ <user key>; SessionId } each),
    # read from quser: @{ <id> = $true }; $null when quser.exe is not there (Home editions), and
    # every session then counts as connected. quser's header and state words are localized, so
    # they are not read. Relied on instead (assumption, docs/remote-scripts.md "Sessions"): each
    # line is one marker character ('>' for the caller's own session), the user's SAM name (cut
    # to 20 characters), the session's name, its id; session names are WinStation names
    # (console, rdp-tcp#N), not localized, and a disconnected session has none, so its id
    # follows the user's name directly.
    param([object[]]$Sessions, [string]$UserKey)
    $quser = "$env:SystemRoot\System32\quser.exe"
    if (-not (Test-Path -LiteralPath $quser -PathType Leaf)) {
        return $null
    }
    $ErrorActionPreference = 'Continue'
    $lines = @(& "$env:SystemRoot\System32\quser.exe" 2>$null)
    $ErrorActionPreference = 'Stop'
    $found = @{}
    foreach ($session in @($Sessions)) {
        $name = @(([string]$session[$UserKey]) -split '\\')[-1]
        if ($name.Length -gt 20) {
            $name = $name.Substring(0, 20)
        }
        $pattern = '^.' + [regex]::Escape($name) + '\s+' + [int]$session['SessionId'] + '(\s|$)'
        foreach ($line in $lines) {
            if ([string]$line -match $pattern) {
                $found[[int]$session['SessionId']] = $true
            }
        }
    }
    return $found
}

function Get-ExpectedUsers {
    # -ExpectedUser as @{ Name; Sid } each: a SID as given, a name this host translates (one it
    # cannot fails with UnknownLogonUser: pass its SID).
    $expected = @()
    foreach ($wanted in @($ExpectedUser)) {
        if ([string]::IsNullOrEmpty($wanted)) {
            continue
        }
        if ($wanted -match '^S-1-[0-9-]+$') {
            $expected += @{ Name = (Get-AccountName -Sid $wanted); Sid = $wanted }
            continue
        }
        $sid = Get-AccountSid -Name $wanted
        if ($null -eq $sid) {
            Stop-RunTask -Message ('-ExpectedUser ' + $wanted + ' cannot be mapped to a SID: pass its SID.') `
                -Id 'UnknownLogonUser' -Category ([System.Management.Automation.ErrorCategory]::InvalidArgument)
        }
        $expected += @{ Name = $wanted; Sid = $sid }
    }
    return $expected
}

function Select-SessionUser {
    # Whose session CPUU runs in now, @{ Name; Sid }, or $null. With expected users: the first of
    # them logged on, the console's user first, then the other sessions; nobody else, ever (a
    # technician logged on does not consume the run). Without: the console's user, else the one
    # user of the only other session (RDP to a workstation); several and none expected: nobody.
    # Who is logged on instead goes to $script:otherUsers for the report.
    # -Disconnected Skip: a disconnected session's user is passed over (named in
    # $script:disconnectedUsers), as if not logged on.
    param([object[]]$Expected)
    $console = Get-InteractiveUser
    $on = @()
    if ($null -ne $console) {
        $on += $console
    }
    $shells = @(Get-ShellSessions)
    foreach ($session in $shells) {
        if ($null -eq $console -or $session['Sid'] -ne $console['Sid']) {
            $on += $session
        }
    }
    if ($Disconnected -eq 'Skip') {
        $gone = Get-DisconnectedSessionIds -Sessions $shells -UserKey 'Name'
        if ($null -ne $gone) {
            $away = @($shells | Where-Object { $gone.ContainsKey([int]$_['SessionId']) } |
                ForEach-Object { $_['Sid'] })
            $script:disconnectedUsers = [string[]]@($on | Where-Object { $away -contains $_['Sid'] } |
                ForEach-Object { $_['Name'] })
            $on = @($on | Where-Object { $away -notcontains $_['Sid'] })
            if ($null -ne $console -and $away -contains $console['Sid']) {
                $console = $null
            }
        }
    }
    if (@($Expected).Count -gt 0) {
        foreach ($user in $on) {
            foreach ($wanted in @($Expected)) {
                if ($user['Sid'] -eq $wanted['Sid']) {
                    return $user
                }
            }
        }
    }
    elseif ($null -ne $console) {
        return $console
    }
    elseif ($on.Count -eq 1) {
        return $on[0]
    }
    $script:otherUsers = [string[]]@($on | ForEach-Object { $_['Name'] })
    return $null
}

function Get-AtLogonUser {
    # The ONE user an at-logon task is for: the first expected user, else the owner of the most
    # recently used user profile (Win32_UserProfile, special accounts left out), named in a
    # warning. $null: nobody known (nothing is registered).
    param([object[]]$Expected)
    if (@($Expected).Count -gt 0) {
        return @($Expected)[0]
    }
    $profiles = @(Get-CimInstance -ClassName Win32_UserProfile -Filter 'Special = FALSE' -ErrorAction Stop |
        Where-Object { [string]$_.SID -like 'S-1-5-21-*' -or [string]$_.SID -like 'S-1-12-1-*' } |
        Sort-Object -Property LastUseTime -Descending)
    if ($profiles.Count -eq 0) {
        Write-Warning 'No -ExpectedUser and no user profile on this host: no at-logon task registered.'
        return $null
    }
    $sid = [string]$profiles[0].SID
    $name = Get-AccountName -Sid $sid
    Write-Warning ('No -ExpectedUser: the at-logon task is for the last user of this host, ' + $name + '.')
    return @{ Name = $name; Sid = $sid }
}

function Get-TaskReport {
    param(
        [bool]$NoUser = $false,
        [bool]$Killed = $false,
        [bool]$Claimed = $false,
        [bool]$Waited = $false,
        [bool]$NotStarted = $false,
        [bool]$Settled = $true
    )
    $marker = Read-Marker
    $markerKilled = $false
    $startedAt = $null
    $markerExit = $null
    $markerUser = $null
    if ($null -ne $marker) {
        $markerKilled = [bool]$marker['Killed']
        $startedAt = $marker['StartedAt']
        $markerExit = $marker['ExitCode']
        $markerUser = $marker['User']
    }
    $report = @{
        TaskName       = $TaskName
        Exists         = $false
        State          = 'NotFound'
        Trigger        = $null
        User           = $null
        NoUser         = $NoUser
        LastRunTime    = $null
        LastTaskResult = [int64]$hasNotRun
        Killed         = ($Killed -or $markerKilled)
        Marker         = ($null -ne $marker)
        Claimed        = $Claimed
        Waited         = $Waited
        StartedAt      = $startedAt
        NotStarted     = $NotStarted
        Settled        = $Settled
        OtherUsers     = [string[]]$script:otherUsers
        Disconnected   = [string[]]$script:disconnectedUsers
    }
    $task = Get-FleetTask
    if ($null -eq $task) {
        if ($null -ne $marker) {
            # The task was removed after it ended: the marker kept what became of it.
            $report['Trigger'] = $marker['Trigger']
            $report['User'] = $marker['User']
            if ($null -ne $markerExit) {
                $report['LastTaskResult'] = [int64]$markerExit
            }
        }
        return $report
    }
    $info = Get-ScheduledTaskInfo -InputObject $task -ErrorAction Stop
    # A task registered without trigger was started on demand ("Now").
    $trigger = 'Now'
    if ($null -ne $task.Triggers) {
        foreach ($candidate in $task.Triggers) {
            if ($null -ne $candidate -and $candidate.CimClass.CimClassName -eq 'MSFT_TaskLogonTrigger') {
                $trigger = 'AtLogon'
            }
        }
    }
    # The marker has the name as Windows gave it; the principal itself is a SID.
    $user = [string]$markerUser
    if ([string]::IsNullOrEmpty($user)) {
        $user = Get-AccountName -Sid ([string]$task.Principal.UserId)
    }
    if (-not [string]::IsNullOrEmpty([string]$task.Principal.GroupId)) {
        $user = 'BUILTIN\Users'  # registered by an earlier cpuu-fleet
    }
    # A task that never ran reports a LastRunTime of 1999-11-30 (or none).
    $lastRunTime = $null
    if ($null -ne $info.LastRunTime -and $info.LastRunTime.Year -ge 2000) {
        $lastRunTime = $info.LastRunTime.ToUniversalTime().ToString('o')
    }
    $last = [int64]$info.LastTaskResult
    $report['Exists'] = $true
    $report['State'] = [string]$task.State
    $report['Trigger'] = $trigger
    $report['User'] = $user
    $report['LastRunTime'] = $lastRunTime
    $report['LastTaskResult'] = $last
    $report['Killed'] = ($report['Killed'] -or $last -eq $terminated)
    return $report
}

function New-OncePerUserAction {
    # The at-logon task's action: cmd.exe runs the batch file only when the user's own record of
    # this task is absent. The record (in the user's %LOCALAPPDATA%, which the task's user can
    # write) says 267014 while the run goes on and its exit code once it ended; a later logon of
    # the same user replays that code instead of running CPUU again, so LastTaskResult stays the
    # first run's. The task name is reduced to [A-Za-z0-9._-] and the batch path is ours
    # (no % or !), so cmd expands nothing in the line but the variables written here.
    $safe = [regex]::Replace($TaskName, '[^A-Za-z0-9._-]', '_')
    $folder = '%LOCALAPPDATA%\cpuu-fleet'
    $record = $folder + '\' + $safe + '.exit'
    $line = 'if exist "' + $record + '" (set /p rc=<"' + $record + '" & exit !rc!) else ((mkdir "' +
        $folder + '" 2>nul) & (echo 267014)>"' + $record + '" & call "' + $Command +
        '" & set "rc=!errorlevel!" & (echo !rc!)>"' + $record + '" & exit !rc!)'
    return New-ScheduledTaskAction -Execute 'cmd.exe' -Argument ('/d /v:on /s /c "' + $line + '"') `
        -WorkingDirectory $WorkingDirectory -ErrorAction Stop
}

function Register-FleetTask {
    param([string]$Sid, [string]$Trigger)
    if ($null -ne (Get-FleetTask)) {
        return  # create-if-absent: never -Force over a task that may be running
    }
    # The execution time limit is only a safety net for a run the engine never comes back to:
    # Wait enforces the real deadline and records the kill itself. Priority 5: the default 7 is
    # below normal, slower than CPUU started by its user, against a fixed deadline.
    $settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries `
        -MultipleInstances IgnoreNew -ExecutionTimeLimit (New-TimeSpan -Seconds ($TimeoutSeconds + 300)) `
        -Priority $taskPriority -ErrorAction Stop
    $principal = New-ScheduledTaskPrincipal -UserId $Sid -LogonType Interactive -RunLevel Limited -ErrorAction Stop
    $register = @{
        TaskName  = $TaskName
        TaskPath  = $taskPath
        Settings  = $settings
        Principal = $principal
    }
    if ($Trigger -eq 'AtLogon') {
        # One user (the trigger's UserId: a logon trigger without one fires for anybody), once
        # per user (the action's record), and only until EndBoundary. No DeleteExpiredTaskAfter:
        # a task that ran must keep its LastTaskResult until the engine reads it.
        $logon = New-ScheduledTaskTrigger -AtLogOn -User $Sid -ErrorAction Stop
        $logon.EndBoundary = [DateTime]::Now.AddDays($atLogonDays).ToString('s')
        $register['Trigger'] = $logon
        $register['Action'] = New-OncePerUserAction
    }
    else {
        $register['Action'] = New-ScheduledTaskAction -Execute $Command -WorkingDirectory $WorkingDirectory -ErrorAction Stop
    }
    $null = Register-ScheduledTask @register -ErrorAction Stop
}

function Start-FleetTask {
    # Returns 'NoUser' (nobody logged on, policy Skip, or nobody to register an at-logon task
    # for), 'AtLogon' (nobody logged on: registered for the next logon of one user), 'Claimed'
    # (this call started CPUU) or 'Known' (the marker existed: started or registered before, by
    # whoever; never started again here).
    if ([string]::IsNullOrEmpty($Command) -or [string]::IsNullOrEmpty($WorkingDirectory) -or
        [string]::IsNullOrEmpty($SourceDirectory)) {
        Stop-RunTask -Message '-Command, -WorkingDirectory and -SourceDirectory are required to start a task.' `
            -Id 'MissingCommand' -Category ([System.Management.Automation.ErrorCategory]::InvalidArgument)
    }
    Assert-TrustedFolder -Path $SourceDirectory
    Assert-TrustedFolder -Path ([System.IO.Path]::GetDirectoryName($SourceDirectory.TrimEnd('\')))
    if ($null -ne (Read-Marker)) {
        return 'Known'
    }
    $expected = @(Get-ExpectedUsers)
    $user = Select-SessionUser -Expected $expected
    if ($null -eq $user -and $WhenNoUser -eq 'Skip') {
        return 'NoUser'
    }
    $trigger = 'Now'
    $target = $user
    if ($null -eq $user) {
        $trigger = 'AtLogon'
        $target = Get-AtLogonUser -Expected $expected
        if ($null -eq $target) {
            return 'NoUser'
        }
    }
    $marker = New-Marker -User $target['Name'] -Sid $target['Sid'] -Trigger $trigger
    if ($null -eq $marker) {
        return 'Known'  # another caller claimed it between our look and our claim
    }
    $existing = Get-FleetTask
    if ($null -ne $existing) {
        # Registered before any marker (an earlier cpuu-fleet): start it only if it never ran.
        $info = Get-ScheduledTaskInfo -InputObject $existing -ErrorAction Stop
        if (Test-HasRun -Task $existing -Info $info) {
            if ($null -ne $info.LastRunTime -and $info.LastRunTime.Year -ge 2000) {
                $marker['StartedAt'] = $info.LastRunTime.ToUniversalTime().ToString('o')
            }
            $marker['Launched'] = $true
            Write-Marker -Marker $marker
            return 'Known'
        }
    }
    try {
        New-RunFolder -Sid $target['Sid']
        Register-FleetTask -Sid $target['Sid'] -Trigger $trigger
    }
    catch {
        # Nothing was registered, so nothing can start: give the claim back.
        Remove-Item -LiteralPath (Get-MarkerPath) -Force -ErrorAction SilentlyContinue
        throw
    }
    if ($trigger -eq 'Now') {
        # Asynchronous: the instance may appear seconds later (Wait's grace period).
        $null = Start-ScheduledTask -TaskPath $taskPath -TaskName $TaskName -ErrorAction Stop
        $marker['Launched'] = $true
        Write-Marker -Marker $marker
        return 'Claimed'
    }
    return 'AtLogon'
}

function Test-HasRun {
    # Did the task's instance ever come up? Not "registered, started, still 267011".
    param($Task, $Info)
    $state = [string]$Task.State
    if ($state -eq 'Running' -or $state -eq 'Queued') {
        return $true
    }
    if ($null -ne $Info.LastRunTime -and $Info.LastRunTime.Year -ge 2000) {
        return $true
    }
    return ([int64]$Info.LastTaskResult -ne $hasNotRun)
}

function Test-OnDemand {
    # A run started by Start-ScheduledTask (not at logon): it must come up within the grace period.
    $marker = Read-Marker
    return ($null -eq $marker -or [string]$marker['Trigger'] -ne 'AtLogon')
}

function Test-NeverCameUp {
    # Started on demand, then disabled by a Wait because it never came up: still not started.
    $task = Get-FleetTask
    if ($null -eq $task -or -not (Test-OnDemand) -or $null -eq (Read-Marker) -or [string]$task.State -ne 'Disabled') {
        return $false
    }
    $info = Get-ScheduledTaskInfo -InputObject $task -ErrorAction Stop
    return (-not (Test-HasRun -Task $task -Info $info))
}

function Test-Active {
    # Running, or started on demand and not come up yet (Wait must look at it).
    $task = Get-FleetTask
    if ($null -eq $task) {
        return $false
    }
    $state = [string]$task.State
    if ($state -eq 'Running' -or $state -eq 'Queued') {
        return $true
    }
    $info = Get-ScheduledTaskInfo -InputObject $task -ErrorAction Stop
    return ((Test-OnDemand) -and $state -ne 'Disabled' -and -not (Test-HasRun -Task $task -Info $info))
}

function Test-Ended {
    # A run started on demand that came up and is over (by itself, or killed): what Remove would
    # unregister, its outcome kept by the marker. Never an at-logon task (it waits for a logon)
    # nor one that never came up (Run must read and disable it).
    $task = Get-FleetTask
    if ($null -eq $task -or $null -eq (Read-Marker) -or -not (Test-OnDemand) -or (Test-Active)) {
        return $false
    }
    $info = Get-ScheduledTaskInfo -InputObject $task -ErrorAction Stop
    return ([string]$task.State -ne 'Disabled' -and (Test-HasRun -Task $task -Info $info))
}

function Get-Deadline {
    # The deadline counts from when CPUU started (the marker), not from this call: a resumed
    # controller must not grant a hung CPUU a second full timeout.
    $marker = Read-Marker
    if ($null -ne $marker -and -not [string]::IsNullOrEmpty([string]$marker['StartedAt'])) {
        $started = [DateTime]::Parse([string]$marker['StartedAt'], [System.Globalization.CultureInfo]::InvariantCulture,
            [System.Globalization.DateTimeStyles]::RoundtripKind)
        return $started.ToUniversalTime().AddSeconds($TimeoutSeconds)
    }
    return [DateTime]::UtcNow.AddSeconds($TimeoutSeconds)
}

function Get-GraceEnd {
    # Start-ScheduledTask returned at the marker's StartedAt; the instance had until this to appear.
    $marker = Read-Marker
    if ($null -ne $marker -and -not [string]::IsNullOrEmpty([string]$marker['StartedAt'])) {
        $started = [DateTime]::Parse([string]$marker['StartedAt'], [System.Globalization.CultureInfo]::InvariantCulture,
            [System.Globalization.DateTimeStyles]::RoundtripKind)
        return $started.ToUniversalTime().AddSeconds($startGraceSeconds)
    }
    return [DateTime]::UtcNow.AddSeconds($startGraceSeconds)
}

function Save-Outcome {
    # Record in the marker what became of the run, so it outlives the task (Remove, a reboot).
    param([bool]$Killed)
    $marker = Read-Marker
    $task = Get-FleetTask
    if ($null -eq $marker -or $null -eq $task) {
        return
    }
    $info = Get-ScheduledTaskInfo -InputObject $task -ErrorAction Stop
    $last = [int64]$info.LastTaskResult
    $changed = $false
    if ($Killed -and -not [bool]$marker['Killed']) {
        $marker['Killed'] = $true
        $marker['KilledAt'] = [DateTime]::UtcNow.ToString('o')
        $changed = $true
    }
    if ($last -ne $hasNotRun -and $last -ne $running -and [string]$task.State -ne 'Running' -and $null -eq $marker['ExitCode']) {
        $marker['ExitCode'] = $last
        $marker['FinishedAt'] = [DateTime]::UtcNow.ToString('o')
        $changed = $true
    }
    if ($changed) {
        Write-Marker -Marker $marker
    }
}

function Get-TaskProcessTree {
    # The processes the task's running instance started: the children (and theirs) of its engine
    # process, IRunningTask.EnginePID, by Win32_Process.ParentProcessId. A child must be younger
    # than its parent: Windows never reparents, and a dead parent's PID may have been reused.
    # The engine process is only trusted when it is the action's own program (cmd.exe, or CPUU);
    # otherwise (the assumption that EnginePID is the action's process failed) the roots are the
    # cmd.exe processes whose command line holds this run's batch file (from the marker), which
    # are then killed too. Never anything else: a wrong root would kill other tasks' processes.
    $service = New-Object -ComObject Schedule.Service
    $service.Connect()
    try {
        $registered = $service.GetFolder($taskPath.TrimEnd('\')).GetTask($TaskName)
    }
    catch {
        return @()
    }
    $all = @(Get-CimInstance -ClassName Win32_Process -ErrorAction Stop)
    $own = @('cmd.exe', 'ClientProfileUpdatingUtility.exe')
    $roots = @()
    foreach ($instance in @($registered.GetInstances(0))) {
        $enginePid = [int]$instance.EnginePID
        $roots += @($all | Where-Object { [int]$_.ProcessId -eq $enginePid -and $own -contains [string]$_.Name })
    }
    $tree = @()
    if ($roots.Count -eq 0) {
        $marker = Read-Marker
        $batch = ''
        if ($null -ne $marker -and $null -ne $marker['Command']) {
            $batch = [string]$marker['Command']
        }
        if ($batch.Length -gt 0) {
            $roots = @($all | Where-Object { [string]$_.Name -eq 'cmd.exe' -and ([string]$_.CommandLine).Contains($batch) })
            $tree += $roots
        }
    }
    $parents = $roots
    while ($parents.Count -gt 0) {
        $children = @()
        foreach ($parent in $parents) {
            $parentPid = [int]$parent.ProcessId
            $born = $parent.CreationDate
            $children += @($all | Where-Object {
                    [int]$_.ParentProcessId -eq $parentPid -and [int]$_.ProcessId -ne $parentPid -and $_.CreationDate -ge $born
                })
        }
        $tree += $children
        $parents = $children
    }
    return $tree
}

function Test-ProcessAlive {
    # The same process (PID and creation time) still lives.
    param($Process)
    $found = Get-CimInstance -ClassName Win32_Process -Filter ('ProcessId=' + [int]$Process.ProcessId) -ErrorAction SilentlyContinue
    return ($null -ne $found -and $found.CreationDate -eq $Process.CreationDate)
}

function Stop-FleetTaskTree {
    # Kill the run and everything it started; $true once the task no longer reads Running and no
    # process of the tree lives. Stop-ScheduledTask alone ends cmd.exe and leaves CPUU running
    # (assumption, see docs/remote-scripts.md): the tree is taken first, the task stopped (its
    # LastTaskResult becomes 267014), then each process of the tree terminated.
    $tree = @(Get-TaskProcessTree)
    $null = Stop-ScheduledTask -TaskPath $taskPath -TaskName $TaskName -ErrorAction Stop
    foreach ($process in $tree) {
        $null = Invoke-CimMethod -InputObject $process -MethodName Terminate -ErrorAction SilentlyContinue
    }
    Save-Outcome -Killed $true
    $settleBy = [DateTime]::UtcNow.AddSeconds($stopSettleSeconds)
    while ($true) {
        $task = Get-FleetTask
        $alive = @($tree | Where-Object { Test-ProcessAlive -Process $_ })
        if (($null -eq $task -or [string]$task.State -ne 'Running') -and $alive.Count -eq 0) {
            Save-Outcome -Killed $true
            return $true
        }
        if ([DateTime]::UtcNow -ge $settleBy) {
            return $false
        }
        Start-Sleep -Seconds 1
    }
}

function Disable-Unstarted {
    # The run never came up within the grace period: disable the task so that it cannot start
    # late. $false when it came up after all (then it is waited for as usual).
    $null = Disable-ScheduledTask -TaskPath $taskPath -TaskName $TaskName -ErrorAction Stop
    $task = Get-FleetTask
    if ($null -eq $task) {
        return $true
    }
    $info = Get-ScheduledTaskInfo -InputObject $task -ErrorAction Stop
    return (-not (Test-HasRun -Task $task -Info $info))
}

function Wait-FleetTask {
    # Poll until the run is over; kill it (the tree) at the deadline. Returns
    # @{ Killed; Settled; NotStarted }: a run started on demand that has not come up within the
    # grace period is NotStarted (and its task disabled), never taken as finished.
    $deadline = Get-Deadline
    $graceEnd = Get-GraceEnd
    $onDemand = Test-OnDemand
    while ($true) {
        $task = Get-FleetTask
        if ($null -eq $task) {
            return @{ Killed = $false; Settled = $true; NotStarted = $false }
        }
        $state = [string]$task.State
        $info = Get-ScheduledTaskInfo -InputObject $task -ErrorAction Stop
        $now = [DateTime]::UtcNow
        if ($onDemand -and $state -ne 'Disabled' -and -not (Test-HasRun -Task $task -Info $info)) {
            if (($now -ge $graceEnd -or $now -ge $deadline) -and (Disable-Unstarted)) {
                return @{ Killed = $false; Settled = $true; NotStarted = $true }
            }
        }
        elseif ($state -ne 'Running' -and $state -ne 'Queued') {
            Save-Outcome -Killed $false
            return @{ Killed = $false; Settled = $true; NotStarted = $false }
        }
        elseif ($now -ge $deadline) {
            $settled = Stop-FleetTaskTree
            return @{ Killed = $true; Settled = $settled; NotStarted = $false }
        }
        Start-Sleep -Seconds $pollSeconds
    }
}

$script:otherUsers = [string[]]@()
$script:disconnectedUsers = [string[]]@()
$noUser = $false
$killed = $false
$claimed = $false
$waited = $false
$notStarted = $false
$settled = $true
$outcome = $null
switch ($Action) {
    'Start' {
        $started = Start-FleetTask
        $noUser = ($started -eq 'NoUser' -or $started -eq 'AtLogon')
        $claimed = ($started -eq 'Claimed' -or $started -eq 'AtLogon')
    }
    'Wait' {
        $outcome = Wait-FleetTask
        $waited = $true
    }
    'Run' {
        $started = Start-FleetTask
        $noUser = ($started -eq 'NoUser' -or $started -eq 'AtLogon')
        $claimed = ($started -eq 'Claimed' -or $started -eq 'AtLogon')
        if (-not $noUser) {
            if (Test-Active) {
                $waited = (-not $claimed)
                $outcome = Wait-FleetTask
            }
            else {
                Save-Outcome -Killed $false
            }
        }
    }
    'Status' {
    }
    'Stop' {
        $task = Get-FleetTask
        if ($null -ne $task -and [string]$task.State -eq 'Running') {
            $killed = $true
            $settled = Stop-FleetTaskTree
        }
    }
    'Remove' {
        $task = Get-FleetTask
        if ($null -ne $task) {
            if ([string]$task.State -eq 'Running') {
                # Unregister-ScheduledTask stops nothing: cmd.exe and CPUU would live on.
                $killed = $true
                $settled = Stop-FleetTaskTree
            }
            Save-Outcome -Killed $false
            $null = Unregister-ScheduledTask -TaskPath $taskPath -TaskName $TaskName -Confirm:$false -ErrorAction Stop
        }
    }
}
if ($null -ne $outcome) {
    $killed = [bool]$outcome['Killed']
    $settled = [bool]$outcome['Settled']
    $notStarted = [bool]$outcome['NotStarted']
}
if (-not $notStarted) {
    $notStarted = Test-NeverCameUp
}

$report = Get-TaskReport -NoUser $noUser -Killed $killed -Claimed $claimed -Waited $waited -NotStarted $notStarted -Settled $settled
$report['Removed'] = $false
$reportEnded = (@('Running', 'Queued') -notcontains [string]$report['State']) -and (@($hasNotRun, $running) -notcontains [int64]$report['LastTaskResult'])
if ($Action -eq 'Status' -and $RemoveEnded -and -not $notStarted -and $reportEnded -and (Test-Ended)) {
    # A detached run step's settling question: the run is over (as the report above read it,
    # and still), so its task goes in the same call (one pipeline, not Status then Remove). The
    # marker keeps the outcome for any later caller, as Remove does.
    Save-Outcome -Killed $false
    $null = Unregister-ScheduledTask -TaskPath $taskPath -TaskName $TaskName -Confirm:$false -ErrorAction Stop
    $report['Removed'] = $true
}
$report
