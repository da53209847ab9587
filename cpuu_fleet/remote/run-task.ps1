# cpuu-fleet: run-task
<#
.SYNOPSIS
    Runs a command in the interactive user's session through a one-shot scheduled task.
.DESCRIPTION
    WinRM runs in session 0 under a network logon and cannot see the logged-on user's HKCU, where
    the Outlook profiles live. CPUU must therefore run as a scheduled task whose principal is the
    interactive user (logon type Interactive), or, when nobody is logged on and the play allows it,
    as an at-logon task for any member of BUILTIN\Users.

    Actions: Start (register and start), Wait (poll until it is no longer running; stop it when
    -TimeoutSeconds passes), Run (Start then Wait), Status, Stop, Remove (unregister).
    Output: one hashtable describing the task (see docs/remote-scripts.md). LastTaskResult is kept
    whole: CPUU's exit code is a bit mask whose values above 255 are real.

    Never twice: before anything is registered, Start claims a marker file named after the task in
    -StateDirectory\runs, created with FileMode CreateNew (fails if it exists, atomically). A task
    whose marker exists is never registered or started again by this script, whoever calls it
    (a retry, a resumed controller, a second controller): the marker records when it started, as
    whom, whether it was killed on its deadline and its exit code, and outlives the task itself.
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

    [string]$StateDirectory = 'C:\ProgramData\cpuu-fleet\state'
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$taskPath = '\cpuu-fleet\'
$hasNotRun = 267011     # 0x41303 SCHED_S_TASK_HAS_NOT_RUN
$running = 267009       # 0x41301 SCHED_S_TASK_RUNNING
$terminated = 267014    # 0x41306 SCHED_S_TASK_TERMINATED: stopped (by us, or the time limit)
$usersGroupSid = 'S-1-5-32-545'
$pollSeconds = 2

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
    param([string]$User, [string]$Trigger)
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

function Get-InteractiveUser {
    # The console session's user, DOMAIN\user; empty when nobody is logged on.
    $userName = (Get-CimInstance -ClassName Win32_ComputerSystem).UserName
    if ([string]::IsNullOrEmpty($userName)) {
        return $null
    }
    return [string]$userName
}

function Get-TaskReport {
    param(
        [bool]$NoUser = $false,
        [bool]$Killed = $false,
        [bool]$Claimed = $false,
        [bool]$Waited = $false
    )
    $marker = Read-Marker
    $markerKilled = $false
    $startedAt = $null
    $markerExit = $null
    if ($null -ne $marker) {
        $markerKilled = [bool]$marker['Killed']
        $startedAt = $marker['StartedAt']
        $markerExit = $marker['ExitCode']
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
    $info = Get-ScheduledTaskInfo -InputObject $task
    # A task registered without trigger was started on demand ("Now").
    $trigger = 'Now'
    if ($null -ne $task.Triggers) {
        foreach ($candidate in $task.Triggers) {
            if ($null -ne $candidate -and $candidate.CimClass.CimClassName -eq 'MSFT_TaskLogonTrigger') {
                $trigger = 'AtLogon'
            }
        }
    }
    $user = [string]$task.Principal.UserId
    if (-not [string]::IsNullOrEmpty([string]$task.Principal.GroupId)) {
        $user = 'BUILTIN\Users'
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

function Register-FleetTask {
    param([string]$user)
    if ($null -ne (Get-FleetTask)) {
        return  # create-if-absent: never -Force over a task that may be running
    }
    $action = New-ScheduledTaskAction -Execute $Command -WorkingDirectory $WorkingDirectory
    # The execution time limit is only a safety net for a run the engine never comes back to:
    # Wait enforces the real deadline and records the kill itself.
    $settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries `
        -MultipleInstances IgnoreNew -ExecutionTimeLimit (New-TimeSpan -Seconds ($TimeoutSeconds + 300))
    $register = @{
        TaskName = $TaskName
        TaskPath = $taskPath
        Action   = $action
        Settings = $settings
    }
    if ([string]::IsNullOrEmpty($user)) {
        # Nobody to run as now: run at the next logon of any member of BUILTIN\Users.
        $register['Principal'] = New-ScheduledTaskPrincipal -GroupId $usersGroupSid -RunLevel Limited
        $register['Trigger'] = New-ScheduledTaskTrigger -AtLogOn
    }
    else {
        $register['Principal'] = New-ScheduledTaskPrincipal -UserId $user -LogonType Interactive -RunLevel Limited
    }
    $null = Register-ScheduledTask @register
}

function Start-FleetTask {
    # Returns 'NoUser' (nobody logged on, policy Skip), 'AtLogon' (nobody logged on: registered
    # for the next logon), 'Claimed' (this call started CPUU) or 'Known' (the marker existed:
    # started or registered before, by whoever; never started again here).
    if ([string]::IsNullOrEmpty($Command) -or [string]::IsNullOrEmpty($WorkingDirectory)) {
        $exception = New-Object -TypeName System.ArgumentException -ArgumentList '-Command and -WorkingDirectory are required to start a task.'
        $record = New-Object -TypeName System.Management.Automation.ErrorRecord -ArgumentList @(
            $exception, 'MissingCommand', [System.Management.Automation.ErrorCategory]::InvalidArgument, $TaskName)
        $PSCmdlet.ThrowTerminatingError($record)
    }
    $user = Get-InteractiveUser
    if ($null -ne (Read-Marker)) {
        return 'Known'
    }
    if ($null -eq $user -and $WhenNoUser -eq 'Skip') {
        return 'NoUser'
    }
    $trigger = 'Now'
    if ($null -eq $user) {
        $trigger = 'AtLogon'
    }
    $marker = New-Marker -User $user -Trigger $trigger
    if ($null -eq $marker) {
        return 'Known'  # another caller claimed it between our look and our claim
    }
    $existing = Get-FleetTask
    if ($null -ne $existing) {
        # Registered before any marker (an earlier cpuu-fleet): start it only if it never ran.
        $info = Get-ScheduledTaskInfo -InputObject $existing
        $idle = ([string]$existing.State -ne 'Running' -and [string]$existing.State -ne 'Queued')
        if (-not $idle -or [int64]$info.LastTaskResult -ne $hasNotRun) {
            if ($null -ne $info.LastRunTime -and $info.LastRunTime.Year -ge 2000) {
                $marker['StartedAt'] = $info.LastRunTime.ToUniversalTime().ToString('o')
            }
            $marker['Launched'] = $true
            Write-Marker -Marker $marker
            return 'Known'
        }
    }
    Register-FleetTask -User $user
    if ($trigger -eq 'Now') {
        $null = Start-ScheduledTask -TaskPath $taskPath -TaskName $TaskName
        $marker['Launched'] = $true
        Write-Marker -Marker $marker
        return 'Claimed'
    }
    return 'AtLogon'
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

function Save-Outcome {
    # Record in the marker what became of the run, so it outlives the task (Remove, a reboot).
    param([bool]$Killed)
    $marker = Read-Marker
    $task = Get-FleetTask
    if ($null -eq $marker -or $null -eq $task) {
        return
    }
    $info = Get-ScheduledTaskInfo -InputObject $task
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

function Wait-FleetTask {
    # Returns $true when the deadline passed and the task had to be stopped.
    $deadline = Get-Deadline
    while ($true) {
        $task = Get-FleetTask
        if ($null -eq $task) {
            return $false
        }
        $state = [string]$task.State
        if ($state -ne 'Running' -and $state -ne 'Queued') {
            Save-Outcome -Killed $false
            return $false
        }
        if ([DateTime]::UtcNow -ge $deadline) {
            $null = Stop-ScheduledTask -TaskPath $taskPath -TaskName $TaskName
            Save-Outcome -Killed $true
            return $true
        }
        Start-Sleep -Seconds $pollSeconds
    }
}

$noUser = $false
$killed = $false
$claimed = $false
$waited = $false
switch ($Action) {
    'Start' {
        $started = Start-FleetTask
        $noUser = ($started -eq 'NoUser' -or $started -eq 'AtLogon')
        $claimed = ($started -eq 'Claimed' -or $started -eq 'AtLogon')
    }
    'Wait' {
        $killed = Wait-FleetTask
        $waited = $true
    }
    'Run' {
        $started = Start-FleetTask
        $noUser = ($started -eq 'NoUser' -or $started -eq 'AtLogon')
        $claimed = ($started -eq 'Claimed' -or $started -eq 'AtLogon')
        if (-not $noUser) {
            $task = Get-FleetTask
            if ($null -ne $task -and ([string]$task.State -eq 'Running' -or [string]$task.State -eq 'Queued')) {
                $waited = (-not $claimed)
                $killed = Wait-FleetTask
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
            $null = Stop-ScheduledTask -TaskPath $taskPath -TaskName $TaskName
            Save-Outcome -Killed $true
            $killed = $true
        }
    }
    'Remove' {
        $task = Get-FleetTask
        if ($null -ne $task) {
            Save-Outcome -Killed $false
            $null = Unregister-ScheduledTask -TaskPath $taskPath -TaskName $TaskName -Confirm:$false
        }
    }
}

Get-TaskReport -NoUser $noUser -Killed $killed -Claimed $claimed -Waited $waited
